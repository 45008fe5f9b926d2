"""The history in the main window: runs recorded by a tab, listed after a restart with the tab's
state restored; a history that cannot open; File > Open sample and dropped files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from engines.decoding.config import DecodingConfig
from engines.requests import embed_in_png
from studio.app import attach_history, history_folder
from tests.tab_helpers import new_window

FIXTURES = Path(__file__).parent / "fixtures"
MODEL = "tiny-gpt2-optimum"
RUN_TIMEOUT_MS = 10_000

pytestmark = pytest.mark.usefixtures("isolated_user_models")


def status(window) -> str:
    return window.statusBar().currentMessage()


def open_window(qtbot, data: Path):
    w = new_window(qtbot, FIXTURES)
    store = attach_history(w, data)
    assert store is not None and w.ctx.history is store
    return w


def test_the_history_and_the_text_tab_survive_a_restart(qtbot, tmp_path):
    data = tmp_path / "data"
    w = open_window(qtbot, data)
    tab = w.tab("Text")
    assert tab.select_model(MODEL)
    tab.prompt.setPlainText("ROMEO:")
    tab.max_tokens.setValue(12)
    w.ctx.set_decoding_config(DecodingConfig(seed=42), "text")
    branch = tab.generate()
    assert branch is not None, tab.status_text()
    qtbot.waitUntil(lambda: not tab.is_running(), timeout=RUN_TIMEOUT_MS)
    text = tab.branch_text(branch)
    w.close()  # saves the tab states and closes the database
    assert w.ctx.history is None

    w2 = open_window(qtbot, data)
    assert w2.tab("History") is w2.history.panel  # the History tab lists the store's runs
    rows = w2.history.panel.model.rows
    assert len(rows) == 1
    run = rows[0]
    assert (run.tab, run.model, run.status) == ("text", MODEL, "done")
    assert run.summary["tokens"] >= 12 and run.summary["logprob"] < 0
    files = w2.history.store.output_paths(run.id)
    assert files and json.loads(files[0].read_text())["request"]["prompt"] == "ROMEO:"
    # the Text tab is as it was: its prompt and its branch tree
    tab2 = w2.tab("Text")
    assert tab2.prompt.toPlainText() == "ROMEO:" and tab2.max_tokens.value() == 12
    restored = tab2.store.all()
    assert len(restored) == 1 and tab2.branch_text(restored[0]) == text

    # re-open from the History panel: the tab gets the run's request back
    tab2.prompt.setPlainText("something else")
    w2.ctx.set_decoding_config(DecodingConfig(temperature=0.5), "text")
    w2.select_tab("Models")
    assert w2.history.reopen_run(run.id), status(w2)
    assert w2.tabs.currentWidget() is tab2
    assert tab2.prompt.toPlainText() == "ROMEO:"
    assert w2.ctx.decoding_config("text").seed == 42
    assert "Re-opened run" in status(w2)
    w2.close()


def test_each_tabs_decoding_settings_survive_a_restart_separately(qtbot, tmp_path):
    data = tmp_path / "data"
    w = open_window(qtbot, data)
    w.ctx.set_decoding_config(DecodingConfig(top_p=0.9, temperature=0.7, seed=3), "text")
    w.ctx.set_decoding_config(DecodingConfig(top_k=7, seed=11), "image")
    w.close()
    w2 = open_window(qtbot, data)
    assert w2.ctx.decoding_config("text") == DecodingConfig(top_p=0.9, temperature=0.7, seed=3)
    assert w2.ctx.decoding_config("image") == DecodingConfig(top_k=7, seed=11)
    w2.select_tab("Image")  # the panel shows the Image tab's own settings, not the Text tab's
    assert w2.decoding_panel.config().top_k == 7 and w2.decoding_panel.config().top_p == 1.0
    w2.close()


def test_a_history_that_cannot_open_leaves_the_studio_working(qtbot, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "history.sqlite3").write_bytes(b"garbage, not sqlite" * 100)
    w = new_window(qtbot, FIXTURES)
    assert attach_history(w, data) is None
    assert w.ctx.history is None
    assert status(w).startswith("History is off: the history in") and "\n" not in status(w)
    assert "History is off" in w.history.panel.message.text()
    assert w.ctx.record_run_started("text", {"kind": "text"}) is None  # runs go on, unrecorded
    w.close()


def test_the_history_folder_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRULE_STUDIO_DATA", str(tmp_path / "here"))
    assert history_folder() == tmp_path / "here"


def text_request_json(prompt="JULIET:", seed=9, max_new_tokens=17):
    from engines.text.request import TextRequest

    return TextRequest(model=MODEL, prompt=prompt, max_new_tokens=max_new_tokens,
                       decoding=DecodingConfig(temperature=0.7, seed=seed)).to_json()


def test_open_sample_restores_the_text_tab_from_a_json_export(qtbot, tmp_path):
    export = tmp_path / "branch.json"
    export.write_text(json.dumps({"text": "JULIET: hi", "request": text_request_json()}))
    w = new_window(qtbot, FIXTURES)
    w.select_tab("Models")
    assert w.history.open_sample(export), status(w)
    tab = w.tab("Text")
    assert w.tabs.currentWidget() is tab
    assert tab.prompt.toPlainText() == "JULIET:" and tab.max_tokens.value() == 17
    assert w.ctx.decoding_config("text") == DecodingConfig(temperature=0.7, seed=9)
    assert "Opened branch.json" in status(w)
    w.close()


def test_open_sample_refuses_with_one_line(qtbot, tmp_path):
    w = new_window(qtbot, FIXTURES)
    plain = tmp_path / "plain.png"
    Image.new("L", (28, 28)).save(plain)
    assert not w.history.open_sample(plain)
    assert status(w).startswith("Cannot open plain.png:") and "carries no chainrule request" in status(w)
    assert not w.history.open_sample(tmp_path / "missing.json")
    assert "no such file" in status(w)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"request": {**text_request_json(), "model": "not-installed"}}))
    assert not w.history.open_sample(other)
    assert "not-installed" in status(w) and "not installed" in status(w)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"chainrule_request": 1, "kind": "text", "model": MODEL, "colour": "blue"}))
    assert not w.history.open_sample(bad)
    assert "unknown" in status(w) and "\n" not in status(w)
    w.close()


def drop(qtbot, window, path: Path) -> None:
    """Drag `path` over the middle of the window and drop it, through Qt's own routing (the window
    handle picks the widget under the point and walks up to one that takes drops)."""
    window.resize(1000, 700)
    window.show()
    qtbot.waitExposed(window)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    pos = QPoint(500, 400)
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    enter = QDragEnterEvent(pos, *args)
    QApplication.sendEvent(window.windowHandle(), enter)
    assert enter.isAccepted()
    event = QDropEvent(QPointF(pos), *args)
    QApplication.sendEvent(window.windowHandle(), event)
    assert event.isAccepted()


def test_a_dropped_png_sets_the_image_tab_to_its_request(qtbot, tmp_path):
    from engines.image.request import ImageRequest

    w = new_window(qtbot, FIXTURES)
    image_tab = w.tab("Image")
    if not callable(getattr(image_tab, "apply_request", None)):
        pytest.skip("the Image tab has no apply_request yet")
    request = ImageRequest(model="mnist-pixelcnn", label=3, count=1, decoding=DecodingConfig(seed=1234))
    png = tmp_path / "sample_1.png"
    embed_in_png(png, Image.new("L", (28, 28)), request.to_json())
    drop(qtbot, w, png)
    assert w.tabs.currentWidget() is image_tab, status(w)
    assert w.ctx.decoding_config("image").seed == 1234
    assert "Opened sample_1.png" in status(w)
    w.close()


def test_a_dropped_file_without_a_request_says_so(qtbot, tmp_path):
    w = new_window(qtbot, FIXTURES)
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    drop(qtbot, w, junk)
    assert status(w).startswith("Cannot open notes.txt:") and "plain text carries no request" in status(w)
    w.close()


def test_a_run_stopped_by_closing_the_window_is_recorded_as_stopped(qtbot, tmp_path):
    data = tmp_path / "data"
    w = open_window(qtbot, data)
    tab = w.tab("Text")
    assert tab.select_model(MODEL)
    tab.prompt.setPlainText("ROMEO:")
    tab.max_tokens.setValue(5000)
    branch = tab.generate()
    assert branch is not None, tab.status_text()
    qtbot.waitUntil(lambda: len(branch.tokens) >= 3, timeout=RUN_TIMEOUT_MS)
    w.close()  # stops the run mid-way; its end is recorded before the database closes

    w2 = open_window(qtbot, data)
    (run,) = w2.history.panel.model.rows
    assert run.status == "stopped" and run.note == ""
    assert w2.history.store.recovered == []
    w2.close()


def test_cli_exports_of_every_modality_reopen_in_their_tab(qtbot, tmp_path):
    """A WAV (tag + sidecar) and a density PNG written by the CLI open in the Audio and Density tabs,
    set to the request each file carries (the PNG of a PixelCNN and a text JSON: tests above)."""
    from engines.cli import main

    wav, png = tmp_path / "clip.wav", tmp_path / "digit.png"
    assert main(["generate", "audio", "--model", "fsdd-wavenet", "--digit", "3", "--seconds", "0.05",
                 "--seed", "77", "--out", str(wav)]) == 0
    assert main(["generate", "image", "--model", "bmnist-made", "--ordering", "column", "--seed", "31",
                 "--out", str(png)]) == 0
    w = open_window(qtbot, tmp_path / "data")
    assert w.history.open_sample(str(wav)), status(w)
    audio = w.tab("Audio")
    assert w.tabs.currentWidget() is audio and "Opened clip.wav" in status(w)
    assert audio.digit_combo.currentData() == 3 and w.ctx.decoding_config("audio").seed == 77
    assert w.history.open_sample(str(png)), status(w)
    density = w.tab("Density")
    assert w.tabs.currentWidget() is density
    assert density.current_model_info().id == "bmnist-made" and w.ctx.decoding_config("density").seed == 31
    w.close()
