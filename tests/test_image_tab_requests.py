"""The Image tab and ImageRequest: its runs are requests (recorded in the history), its PNG export
carries the request (`chainrule generate --from` regenerates it bit for bit, at a display size
too), `apply_request` restores a request, its saved state round-trips, and its decoding config is
its own, starting from the model card's defaults."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")

from engines.cli import main as cli_main  # noqa: E402
from engines.decoding.config import DecodingConfig  # noqa: E402
from engines.errors import InputError  # noqa: E402
from engines.image.request import ImageRequest  # noqa: E402
from engines.requests import read_request_file, request_from_json  # noqa: E402
from tests.image_models import export_model_dir, make_pixelcnn  # noqa: E402
from tests.tab_helpers import run_and_wait, shown_window  # noqa: E402

GREY = "tiny-grey"  # 6x7, 4 levels, 3 labels
WARM = "tiny-warm"  # the same model with card decoding defaults (temperature 0.8)

pytestmark = pytest.mark.usefixtures("isolated_model_dirs")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("image-tab-request-models")
    export_model_dir(make_pixelcnn(seed=3, levels=4, n_classes=3), root, GREY)
    warm = shutil.copytree(root / GREY, root / WARM)
    card = json.loads((warm / "card.json").read_text())
    card["id"] = WARM
    card["decoding_defaults"] = {"temperature": 0.8}
    (warm / "card.json").write_text(json.dumps(card))
    return root


@pytest.fixture
def window(qtbot, models_dir):
    yield from shown_window(qtbot, models_dir, "Image")


@pytest.fixture
def tab(window):
    t = window.tab("Image")
    assert t.select_model(GREY)
    t.set_speed(math.inf)
    return t


def use_config(window, **kw) -> None:
    window.ctx.set_decoding_config(DecodingConfig(**kw), "image")


def regenerate(capsys, models_dir, png, out) -> dict:
    assert cli_main(["generate", "--from", str(png), "--out", str(out), "--models-dir", str(models_dir),
                     "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def png_pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).copy()


def inpainting_canvas(tab):
    init = np.random.default_rng(1).integers(0, 4, (1, 6, 7)).astype(np.uint8)
    mask = np.zeros((6, 7), bool)
    mask[2:4, 1:5] = True
    tab.canvas.set_state(pixels=init, mask=mask)
    return init, mask


# --- export -> --from ------------------------------------------------------------------------------------
def test_an_exported_sample_regenerates_bit_for_bit_with_from(window, tab, qtbot, tmp_path, capsys, models_dir):
    use_config(window, temperature=0.9, seed=5)
    assert tab.set_label(1)
    tab.samples_spin.setValue(2)
    run = run_and_wait(qtbot, tab, tab.generate)
    assert tab.pick_sample(1)  # the second sample: its own request (seed 6, count 1)
    png = tmp_path / "second.png"
    assert tab.export_png(str(png), scale=8)
    carried = read_request_file(png)
    assert carried["count"] == 1 and carried["decoding"]["seed"] == 6 and carried["label"] == 1
    big = tmp_path / "second@8x.png"
    assert read_request_file(big) == carried and png_pixels(big).shape == (48, 56)
    out = regenerate(capsys, models_dir, png, tmp_path / "again.png")
    np.testing.assert_array_equal(np.array(out["samples"][0]["pixels"])[None], run.results[1].image)
    np.testing.assert_array_equal(png_pixels(tmp_path / "again.png"), png_pixels(png))
    # a canvas edited by hand is no sample of any request: its export says so and carries none
    tab.canvas.set_state(pixels=np.zeros((1, 6, 7), np.uint8))
    plain = tmp_path / "drawn.png"
    assert tab.export_png(str(plain), scale=1)
    assert "carries no request" in tab.status_text() and not (tmp_path / "drawn@1x.png").exists()
    with pytest.raises(InputError):
        read_request_file(plain)


def test_an_exported_posterior_aware_inpainting_regenerates_from_the_png_alone(window, tab, qtbot, tmp_path,
                                                                               capsys, models_dir):
    use_config(window, seed=8)
    inpainting_canvas(tab)
    tab.posterior_check.setChecked(True)
    tab.candidates_spin.setValue(4)
    run = run_and_wait(qtbot, tab, tab.inpaint)
    assert run.request.candidates == 4
    png = tmp_path / "fill.png"
    assert tab.export_png(str(png), scale=1)
    out = regenerate(capsys, models_dir, png, tmp_path / "again.png")
    np.testing.assert_array_equal(np.array(out["samples"][0]["pixels"])[None], tab.canvas.pixels)
    assert out["samples"][0]["posterior"]["chosen"] == run.results[0].chosen


# --- apply_request ---------------------------------------------------------------------------------------
def test_apply_request_restores_model_canvas_settings_and_config(window, tab, qtbot):
    use_config(window, seed=3)
    init, mask = inpainting_canvas(tab)
    assert tab.set_label(2)
    tab.guidance_spin.setValue(0.0)
    tab.posterior_check.setChecked(False)
    first = run_and_wait(qtbot, tab, tab.inpaint)
    request = request_from_json(json.loads(json.dumps(first.request.to_json())))
    # everything changes ...
    tab.clear()
    tab.clear_mask()
    assert tab.set_label(0)
    tab.posterior_check.setChecked(True)
    assert tab.select_model(WARM)
    use_config(window, temperature=0.5, top_p=0.9, seed=99)
    # ... and the request brings it back
    tab.apply_request(request)
    assert tab._model_id == GREY and tab.label() == 2 and not tab.posterior_check.isChecked()
    assert window.ctx.decoding_config("image") == request.decoding
    np.testing.assert_array_equal(tab.canvas.mask_layer, mask)
    np.testing.assert_array_equal(tab.canvas.pixels[:, ~mask], init[:, ~mask])
    assert "Inpaint" in tab.status_text()
    again = run_and_wait(qtbot, tab, tab.inpaint)
    assert again.request == first.request
    np.testing.assert_array_equal(again.results[0].image, first.results[0].image)


def test_apply_request_refuses_a_model_that_is_not_installed(tab):
    before = tab.canvas.state()
    with pytest.raises(InputError, match="not installed"):
        tab.apply_request(ImageRequest(model="no-such-model", decoding=DecodingConfig(seed=1)))
    np.testing.assert_array_equal(tab.canvas.state()[0], before[0])


# --- the saved state -------------------------------------------------------------------------------------
def test_the_state_round_trips_with_the_last_grid(window, tab, qtbot, tmp_path):
    use_config(window, seed=9, temperature=0.9)
    tab.samples_spin.setValue(3)
    tab.candidates_spin.setValue(5)
    run = run_and_wait(qtbot, tab, tab.generate)
    state = json.loads(json.dumps(tab.history_state()))
    assert len(json.dumps(state)) < 2_000_000
    # another session: a fresh tab state
    tab.clear()
    tab.samples_spin.setValue(1)
    use_config(window, seed=1)
    tab._forget_run_views()
    tab.restore_history_state(state)
    assert tab.samples_spin.value() == 3 and tab.candidates_spin.value() == 5
    assert window.ctx.decoding_config("image") == DecodingConfig(seed=9, temperature=0.9)
    np.testing.assert_array_equal(tab.canvas.pixels, run.results[0].image)
    assert tab.grid.count() == 3
    for i in range(3):
        np.testing.assert_array_equal(tab.run.results[i].image, run.results[i].image)
        assert tab.run.results[i].seed == 9 + i
    assert tab.pick_sample(2)
    png = tmp_path / "restored.png"
    assert tab.export_png(str(png), scale=1)
    assert read_request_file(png)["decoding"]["seed"] == 11  # a restored sample still carries its request


def test_a_state_whose_model_is_gone_or_broken_leaves_the_tab_usable(window, tab, qtbot):
    state = tab.history_state()
    tab.restore_history_state({**state, "model": "gone-model"})
    assert "no longer installed" in tab.status_text()
    tab.restore_history_state({**state, "canvas": {"pixels": {"shape": [1], "sha256": "x", "data": "??"}}})
    assert "could not be restored" in tab.status_text()
    tab.restore_history_state("not a state")
    use_config(window, seed=2)
    assert run_and_wait(qtbot, tab, tab.generate).state == "done"


# --- the tab's own decoding config ---------------------------------------------------------------------------
def test_text_settings_never_reach_the_image_tab_and_the_card_defaults_apply(window, tab, qtbot):
    use_config(window, seed=4)
    window.ctx.set_decoding_config(DecodingConfig(top_p=0.9), "text")
    assert window.ctx.decoding_config("image") == DecodingConfig(seed=4)
    run = run_and_wait(qtbot, tab, tab.generate)
    assert run.request.decoding == DecodingConfig(seed=4)
    assert tab.select_model(WARM)
    assert window.ctx.decoding_config("image").temperature == 0.8  # the card's default
    assert tab.select_model(GREY)
    assert window.ctx.decoding_config("image").temperature == 1.0


# --- the history -------------------------------------------------------------------------------------------
def test_every_run_is_recorded_with_its_pngs_carrying_their_requests(window, tab, qtbot, tmp_path):
    from studio.history.store import HistoryStore

    store = HistoryStore(tmp_path / "history")
    window.ctx.history = store
    try:
        use_config(window, seed=21)
        tab.samples_spin.setValue(2)
        run = run_and_wait(qtbot, tab, tab.generate)
        rows = store.list_runs(tab="image")
        assert len(rows) == 1 and rows[0].id == run.run_id and rows[0].status == "done"
        assert request_from_json(store.request(run.run_id)) == run.request
        files = store.output_paths(run.run_id)
        assert [p.name for p in files] == ["sample_1.png", "sample_2.png"]
        assert read_request_file(files[1])["decoding"]["seed"] == 22
        np.testing.assert_array_equal(png_pixels(files[1]), np.round(run.results[1].image[0].astype(int) * 255 / 3))
        assert rows[0].summary["samples"][1]["seed"] == 22
    finally:
        window.ctx.history = None
        store.close()
    assert Path(tmp_path / "history").is_dir()


def test_a_re_opened_run_brings_its_samples_back_into_the_grid(window, tab, qtbot, tmp_path):
    from studio.history.store import HistoryStore

    store = HistoryStore(tmp_path / "history")
    window.ctx.history = store
    window.history.store = store
    try:
        use_config(window, seed=31)
        tab.samples_spin.setValue(3)
        run = run_and_wait(qtbot, tab, tab.generate)
        images = {i: d.image.copy() for i, d in run.results.items()}
        tab.canvas.set_state(pixels=np.zeros((1, 6, 7), np.uint8))
        use_config(window, seed=5)
        tab.samples_spin.setValue(1)
        assert window.history.reopen_run(run.run_id), window.statusBar().currentMessage()
        back = tab.run
        assert back is not run and sorted(back.results) == [0, 1, 2]
        for i, image in images.items():
            np.testing.assert_array_equal(back.results[i].image, image)
            assert back.results[i].total_logprob == pytest.approx(run.results[i].total_logprob)
            assert back.results[i].request == run.results[i].request  # exportable with its own request
        np.testing.assert_array_equal(tab.canvas.pixels, images[0])  # the first sample on the canvas
        assert tab.samples_spin.value() == 3 and window.ctx.decoding_config("image").seed == 31
    finally:
        window.history.store = None
        window.ctx.history = None
        store.close()
