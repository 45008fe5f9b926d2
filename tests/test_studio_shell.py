"""The studio shell: main window, tab registry, decoding panel, models view, `main()`."""

import json
import os
import stat
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QFileDialog, QLabel

from engines.decoding.config import FILTER_NAMES, DecodingConfig
from studio.app import main
from studio.decoding_panel import PRESETS, DecodingPanel
from studio.tabs import register_tab, registered_tabs, unregister_tab
from tests.tab_helpers import new_window


def has_build_chain() -> bool:
    try:
        from engines.decoding import build_chain  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def window(qtbot):
    return new_window(qtbot)


@pytest.fixture
def panel(qtbot):
    p = DecodingPanel()
    qtbot.addWidget(p)
    return p


# --- main window and tab registry ---------------------------------------------------------
def test_window_builds_with_its_tabs_dock_and_status_bar(window):
    assert window.windowTitle() == "Chainrule Studio"
    assert "Models" in window.tab_names()
    assert window.tab_names() == [s.name for s in registered_tabs()]
    assert window.decoding_dock.widget() is window.decoding_settings
    assert window.decoding_settings.panel is window.decoding_panel
    assert window.dockWidgetArea(window.decoding_dock) == Qt.DockWidgetArea.RightDockWidgetArea
    assert window.provider_label.text().startswith("ONNX Runtime: ")
    assert window.select_tab("mOdElS")
    assert not window.select_tab("no such tab")
    assert "Models" in window.about_text()


def test_a_registered_tab_appears_in_order(qtbot):
    register_tab("Zeta Test", lambda ctx: QLabel("zeta"), order=1)
    try:
        w = new_window(qtbot)
        assert w.tab_names()[0] == "Zeta Test"
        assert w.tab("zeta test").text() == "zeta"
    finally:
        unregister_tab("Zeta Test")
    assert "Zeta Test" not in [s.name for s in registered_tabs()]


def test_a_label_with_a_new_text_repaints_itself_not_its_whole_page(qtbot):
    # A QLabel asks for a new layout at every setText, and a plain QTabWidget answers every such
    # request by repainting the whole current page: a status line updated while a model runs
    # repainted every button and plot of its tab (studio.main_window.PageTabs).
    from PySide6.QtCore import QEvent, QObject
    from PySide6.QtWidgets import QPushButton, QVBoxLayout, QWidget

    from studio.main_window import MainWindow
    from studio.tabs import TabSpec

    parts = {}

    def page(ctx):
        w = QWidget()
        layout = QVBoxLayout(w)
        parts["label"], parts["button"] = QLabel("step 0"), QPushButton("elsewhere on the page")
        layout.addWidget(parts["label"])
        layout.addStretch(1)
        layout.addWidget(parts["button"])
        return w

    w = MainWindow(tabs=[TabSpec("Page Test", page)])
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    painted = []

    class Paints(QObject):
        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.Paint:
                painted.append(obj.text())
            return False

    spy = Paints()
    parts["label"].setText("step 1")  # the first layout after showing may lay out everything
    qtbot.wait(100)
    for widget in (parts["label"], parts["button"]):
        widget.installEventFilter(spy)
    for i in range(2, 5):  # a progress line: same size, new text
        parts["label"].setText(f"step {i}")
        qtbot.wait(40)
    assert painted and set(painted) <= {"step 2", "step 3", "step 4"}  # the label, not the button
    for widget in (parts["label"], parts["button"]):
        widget.removeEventFilter(spy)


def test_a_tab_whose_factory_raises_shows_the_error_instead(qtbot):
    def broken(ctx):
        raise RuntimeError("no engine yet")

    register_tab("Broken Test", broken, order=2)
    try:
        w = new_window(qtbot)
        assert "RuntimeError: no engine yet" in w.tab("Broken Test").text()
    finally:
        unregister_tab("Broken Test")


def test_decoding_panel_edits_reach_the_context(window, qtbot):
    key = window.decoding_settings.key()  # the tab whose config the dock shows
    assert key == window.ctx.active_decoding_tab()
    others = {k: window.ctx.decoding_config(k) for k in ("text", "image", "density") if k != key}
    with qtbot.waitSignal(window.ctx.decodingConfigChanged, timeout=1000) as blocker:
        window.decoding_panel.apply_preset("Precise")
    assert blocker.args[0] == key and blocker.args[1].top_k == 10
    assert window.ctx.decoding_config(key) == window.decoding_panel.config()
    assert {k: window.ctx.decoding_config(k) for k in others} == others  # only that tab's changed


def test_closing_the_window_stops_its_tasks(window, qtbot):
    def forever():
        i = 0
        while True:
            yield i
            i += 1

    runner = window.ctx.task_runner("test")
    runner.start(forever)
    qtbot.waitUntil(lambda: runner.active_worker_count() == 1 and runner.is_busy(), timeout=2000)
    window.close()
    assert runner.active_worker_count() == 0


# --- decoding panel -------------------------------------------------------------------------
def test_panel_emits_a_valid_config(panel, qtbot):
    row = panel._rows["top_k"]
    with qtbot.waitSignal(panel.configChanged, timeout=1000) as blocker:
        row.check.setChecked(True)
    cfg = blocker.args[0]
    assert isinstance(cfg, DecodingConfig)
    assert cfg.top_k == 40 and panel.config() == cfg
    with qtbot.waitSignal(panel.configChanged, timeout=1000) as blocker:
        row.spin.setValue(7)
    assert blocker.args[0].top_k == 7
    # Unticking sends the neutral value; ticking again restores the user's value.
    row.check.setChecked(False)
    assert panel.config().top_k == 0
    row.check.setChecked(True)
    assert panel.config().top_k == 7


def test_invalid_edit_shows_the_message_and_does_not_emit(panel, qtbot):
    panel.show()
    before = panel.config()
    row = panel._rows["top_p"]
    row.check.setChecked(True)
    valid = panel.config()
    with qtbot.assertNotEmitted(panel.configChanged):
        row.spin.setValue(0.0)
    assert panel.error_label.isVisible()
    assert "top-p = 0.0 is invalid" in panel.error_label.text()
    assert panel.error() == panel.error_label.text()
    assert panel.config() == valid != before
    # Fixing it emits again and hides the message.
    with qtbot.waitSignal(panel.configChanged, timeout=1000):
        row.spin.setValue(0.5)
    assert not panel.error_label.isVisible() and panel.error() is None
    assert panel.config().top_p == 0.5


def test_beam_settings_show_only_for_beam_and_are_checked(panel, qtbot):
    panel.show()
    assert not panel.beam_box.isVisible()
    panel.strategy.setCurrentText("beam")
    assert panel.beam_box.isVisible()
    assert panel.config().strategy == "beam"
    with qtbot.assertNotEmitted(panel.configChanged):
        panel.num_return.setValue(panel.num_beams.value() + 1)
    assert "cannot exceed num-beams" in panel.error_label.text()
    panel.num_beams.setValue(8)
    assert panel.error() is None
    cfg = panel.config()
    assert (cfg.num_beams, cfg.num_return_sequences) == (8, 5)
    panel.strategy.setCurrentText("sample")
    assert not panel.beam_box.isVisible()


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_apply(panel, qtbot, name):
    panel.set_config(DecodingConfig(top_k=3, seed=11, chain=tuple(reversed(FILTER_NAMES))))
    index = panel.preset.findText(name)
    panel.preset.setCurrentIndex(index)
    panel.preset.activated.emit(index)  # what a user's pick sends
    cfg = panel.config()
    for field, value in PRESETS[name].items():
        assert getattr(cfg, field) == value
    if "top_k" not in PRESETS[name]:
        assert cfg.top_k == 0, "a preset resets the values it does not set"
    assert cfg.seed == 11 and cfg.chain == tuple(reversed(FILTER_NAMES)), "seed and order stay"
    assert panel.preset.currentText() == name
    panel._rows["min_p"].check.setChecked(not panel._rows["min_p"].check.isChecked())
    assert panel.preset.currentText() == "Custom"


def test_balanced_preset_shows_in_the_widgets(panel):
    panel.apply_preset("Balanced")
    assert panel._rows["top_p"].check.isChecked()
    assert panel._rows["top_p"].spin.value() == pytest.approx(0.9)
    assert panel._rows["temperature"].spin.value() == pytest.approx(0.8)
    assert not panel._rows["top_k"].check.isChecked()


def test_reordering_the_chain_list_changes_config_chain(panel, qtbot):
    lst = panel.chain_list
    assert panel.config().chain == FILTER_NAMES
    # A drop in a QListWidget is a remove plus an insert; do the same.
    item = lst.takeItem(lst.count() - 1)  # temperature
    lst.insertItem(0, item)
    qtbot.waitUntil(lambda: panel.config().chain[0] == "temperature", timeout=1000)
    assert panel.config().chain == ("temperature", *FILTER_NAMES[:-1])
    assert lst.item(0).text().startswith("1. temperature")


def test_set_config_round_trips_through_the_widgets(panel):
    cfg = DecodingConfig(strategy="sample", temperature=0.7, top_k=25, top_p=0.85, min_p=0.02,
                         typical_p=0.9, repetition_penalty=1.15, no_repeat_ngram=3,
                         chain=("top_k", "temperature", "top_p", "min_p", "typical_p",
                                "repetition_penalty", "no_repeat_ngram"),
                         seed=2**62 + 5)  # beyond a QSpinBox's 32 bits: must survive exactly
    panel.set_config(cfg)
    assert panel.config() == cfg
    assert DecodingConfig(**panel._widget_values()) == cfg


def test_seed_controls(panel):
    assert panel.config().seed is None
    panel.dice.click()
    seed = panel.config().seed
    assert panel.fixed_seed.isChecked() and isinstance(seed, int) and 0 <= seed < 2**31
    panel.fixed_seed.setChecked(False)
    assert panel.config().seed is None
    panel.fixed_seed.setChecked(True)
    assert panel.config().seed == seed


@pytest.mark.skipif(not has_build_chain(), reason="engines.decoding.build_chain not written yet")
def test_the_live_chain_name_follows_the_config(panel):
    panel.set_config(DecodingConfig(top_p=0.9, temperature=0.8, seed=7))
    text = panel.chain_label.text()
    assert "top-p 0.9" in text and "temp 0.8" in text and "seed 7" in text
    assert text.index("top-p") < text.index("temp")
    panel.fixed_seed.setChecked(False)
    assert "seed random" in panel.chain_label.text()


# --- models view ----------------------------------------------------------------------------
def write_model(root: Path, model_id: str, kind: str = "text") -> dict:
    folder = root / model_id
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"\x08" + bytes(2047))  # listed, never opened here
    card = {"id": model_id, "kind": kind, "files": {"decoder": "model.onnx"},
            "parameters": 123456, "metrics": {"val_nats_per_char": 1.5}}
    (folder / "card.json").write_text(json.dumps(card))
    return card


def test_models_view_lists_models_and_shows_the_card(qtbot, tmp_path):
    pytest.importorskip("engines.registry", reason="engines.registry not written yet")
    card = write_model(tmp_path, "zz-test-char")
    w = new_window(qtbot, tmp_path)
    view = w.tab("Models")
    assert view.stack.currentIndex() == 0
    ids = [view.table.item(r, 0).text() for r in range(view.table.rowCount())]
    assert "zz-test-char" in ids
    row = ids.index("zz-test-char")
    cells = [view.table.item(row, c).text() for c in range(view.table.columnCount())]
    assert cells[1:4] == ["text", "123k", "2.1 KB"]
    assert "val_nats_per_char: 1.5" in cells[4]
    view.table.selectRow(row)
    assert json.loads(view.card.toPlainText()) == card
    summary = view.summary.toPlainText()
    assert summary.startswith(card.get("name") or "zz-test-char") and "val_nats_per_char" in summary


def test_models_view_shows_how_to_add_models_when_there_are_none(qtbot, monkeypatch):
    from studio.context import StudioContext

    monkeypatch.setattr(StudioContext, "list_models", lambda self: [])
    w = new_window(qtbot)
    view = w.tab("Models")
    assert view.stack.currentIndex() == 1
    assert "No models installed yet" in view.empty.text()
    assert "Add models folder" in view.empty.text()


def test_an_added_folder_is_remembered(qtbot, tmp_path, monkeypatch):
    pytest.importorskip("engines.registry", reason="engines.registry not written yet")
    write_model(tmp_path, "zz-added")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path))
    w = new_window(qtbot)
    view = w.tab("Models")
    view.add_button.click()
    assert tmp_path.resolve() in w.ctx.saved_model_dirs()
    assert any(m.id == "zz-added" for m in view.models)
    # A new window (same settings file) still knows the folder.
    w2 = new_window(qtbot)
    assert tmp_path.resolve() in w2.ctx.model_dirs()


# --- main() -----------------------------------------------------------------------------------
def test_screenshot_writes_a_real_png(qtbot, tmp_path):
    out = tmp_path / "shots" / "s.png"
    assert main(["--tab", "models", "--screenshot", out]) == 0
    assert out.stat().st_size > 10_000
    assert list(out.parent.iterdir()) == [out], "no temporary file left behind"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask, "readable like any file the user saves"
    img = QImage(str(out))
    assert (img.width(), img.height()) == (1280, 800)
    colours = {img.pixel(x, y) for x in range(0, 1280, 37) for y in range(0, 800, 23)}
    assert len(colours) > 5, "not a blank image"


def test_an_unknown_tab_is_an_error_listing_the_tabs(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--tab", "nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown tab 'nope'" in err and "Models" in err


def test_the_decoding_dock_hides_on_tabs_that_do_not_use_it_and_returns(qtbot):
    w = new_window(qtbot)
    w.show()
    qtbot.waitExposed(w)
    assert w.select_tab("Text") and w.decoding_dock.isVisible()
    assert w.select_tab("Models") and not w.decoding_dock.isVisible()
    assert w.select_tab("Image") and w.decoding_dock.isVisible()
    w.decoding_dock.close()  # the user closes it: it stays closed on every tab
    assert w.select_tab("Models") and w.select_tab("Text")
    assert not w.decoding_dock.isVisible()
    w.close()
