"""The Density tab on tiny exported NADE, MADE and binarized PixelCNN models (4x4 images):
orderings and K, sampling that matches the engine and the CLI, the ordering seen filling in,
Stop, the models' scores side by side, exact inpainting of scattered masks, comparing
orderings, bad input and export."""

from __future__ import annotations

import json
import math
import shlex
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")

from engines.cli import main as cli_main  # noqa: E402
from engines.decoding.config import DecodingConfig  # noqa: E402
from engines.density.model import load_density_model  # noqa: E402
from engines.density.orderings import make_ordering  # noqa: E402
from engines.density.sampling import sample as engine_sample  # noqa: E402
from engines.image.model import load_image_model  # noqa: E402
from engines.image.png import read_image  # noqa: E402
from engines.image.sampler import score_images  # noqa: E402
from engines.registry import read_card  # noqa: E402
from studio.density import work  # noqa: E402
from tests.density_models import export_made_dir, export_nade_dir, make_made, make_nade  # noqa: E402
from tests.image_models import export_model_dir, make_pixelcnn  # noqa: E402
from tests.tab_helpers import RUN_TIMEOUT_MS, new_window, run_and_wait, shown_window  # noqa: E402

H, W = 4, 4
D = H * W
NADE, MADE, PIXELCNN = "tiny-nade", "tiny-made", "tiny-pixelcnn"
TRAINED = ("raster", "random:1", "column")  # the tiny MADE's (ordering, seed = index) masks
LN2 = math.log(2)

pytestmark = pytest.mark.usefixtures("isolated_model_dirs")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("density-tab-models")
    export_nade_dir(make_nade(dims=D, hidden=8, seed=1), root, NADE,
                    meta={"command": "test", "iter": 0, "data": {"height": H, "width": W}})
    export_made_dir(make_made(dims=D, hidden=(24, 20), seed=0, noise=0.3), root, MADE, orderings=TRAINED,
                    height=H, width=W)
    export_model_dir(make_pixelcnn(seed=4, height=H, width=W, output="bernoulli", levels=2, n_classes=0,
                                   first_kernel_size=3), root, PIXELCNN)
    return root


@pytest.fixture(scope="module")
def engines(models_dir):
    return {"nade": load_density_model(read_card(models_dir / NADE)),
            "made": load_density_model(read_card(models_dir / MADE)),
            "pixelcnn": load_image_model(read_card(models_dir / PIXELCNN))}


@pytest.fixture
def window(qtbot, models_dir):
    yield from shown_window(qtbot, models_dir, "Density")


@pytest.fixture
def tab(window):
    t = window.tab("Density")
    assert t.select_model(MADE)
    t.set_speed(math.inf)
    return t


def set_seed(window, seed, **kw):
    window.decoding_panel.set_config(DecodingConfig(seed=seed, **kw))
    assert window.ctx.decoding_config().seed == seed


def wait_scored(qtbot, tab, pixels):
    qtbot.waitUntil(lambda: tab.score is not None and np.array_equal(tab.score.pixels, pixels)
                    and tab._score_current(tab.score) and tab.is_idle(), timeout=RUN_TIMEOUT_MS)


def digit(seed=0):
    return (np.random.default_rng(seed).random((1, H, W)) < 0.4).astype(np.uint8)


def scattered_mask():
    mask = np.zeros((H, W), bool)
    mask[[0, 1, 2, 3, 1], [1, 3, 0, 2, 1]] = True  # scattered: known pixels before and after each hole
    return mask


# --- models, orderings, K ---------------------------------------------------------------------
def test_the_tab_offers_density_models_and_compares_with_nade_made_and_pixelcnn(window, tab):
    names = window.tab_names()
    assert "Density" in names and names.index("Density") < names.index("Models")
    assert sorted(tab.model_ids()) == [MADE, NADE]  # the PixelCNN is for the comparison only
    assert tab.comparison_ids() == {"nade": NADE, "made": MADE, "pixelcnn": PIXELCNN}
    assert tab.comparison.families == ["nade", "made", "pixelcnn"]
    # MADE: every ordering, K from 1 to its 3 masks (default from its card), Compare enabled.
    assert all(tab.ordering_combo.model().item(i).isEnabled() for i in range(4))
    assert (tab.k_spin.minimum(), tab.k_spin.maximum(), tab.k()) == (1, 3, 3) and tab.k_spin.isEnabled()
    assert tab.compare_button.isEnabled()
    assert tab.set_ordering("random", seed=7) and tab.ordering_spec() == "random:7"
    assert tab.order_seed_spin.isEnabled()


def test_nade_has_raster_only_with_a_tooltip_saying_why(tab):
    assert tab.set_ordering("column")
    assert tab.select_model(NADE)
    assert tab.ordering_spec() == "raster"  # switched back: NADE has no other ordering
    items = [tab.ordering_combo.model().item(i) for i in range(4)]
    assert [it.isEnabled() for it in items] == [True, False, False, False]
    assert all("raster order only" in it.toolTip() for it in items[1:])
    assert not tab.k_spin.isEnabled() and "no ensemble" in tab.k_spin.toolTip()
    assert not tab.compare_button.isEnabled() and "single ordering" in tab.compare_button.toolTip()
    assert not tab.set_ordering("reverse") and "raster order only" in tab.status_text()
    assert not tab.set_k(2) and "K = 2 is out of range" in tab.status_text()
    assert tab.compare_orderings() is None


def test_without_a_density_model_the_tab_says_how_to_get_one(qtbot, tmp_path):
    w = new_window(qtbot, tmp_path)
    tab = w.tab("Density")
    assert tab.pages.currentIndex() == 0
    assert "No density model installed" in tab.empty_label.text() and "export_density" in tab.empty_label.text()
    assert tab.sample() is None
    w.close()


# --- sampling ---------------------------------------------------------------------------------
def test_sample_matches_the_engine_and_the_shown_command_reproduces_it(window, tab, qtbot, engines, capsys):
    set_seed(window, 5)
    assert tab.set_ordering("column")
    tab.samples_spin.setValue(3)
    batches = []
    tab.runner.events.connect(lambda b: batches.append(len(b)))
    run = run_and_wait(qtbot, tab, tab.sample)
    assert run.state == "done" and run.n == 3 * D and sum(batches) > 3 * D  # every pixel came through
    expected = engine_sample(engines["made"], order_name="column", seed=5, count=3)
    for i in range(3):
        np.testing.assert_array_equal(run.results[(0, i)].image, expected.images[i])
        assert run.results[(0, i)].seed == 5 + i
    np.testing.assert_array_equal(tab.canvas.pixels.reshape(-1), expected.images[0])
    assert tab.grid.count() == 3 and tab.results.isVisibleTo(tab)
    done = run.results[(0, 0)]
    made = engines["made"]
    x = expected.images[:1].astype(np.float32)
    assert done.order_logprob == pytest.approx(float(made.conditionals(x, make_ordering("column", D, H, W)).sum()),
                                               abs=1e-6)
    assert done.ensemble_logprob == pytest.approx(float(made.log_prob(x, 3)[0]), abs=1e-6)
    status = tab.status_text()
    assert "seeds 5–7" in status and "column ordering" in status
    cmd = shlex.split(run.command())
    assert cmd[:3] == ["chainrule", "generate", "image"] and "--ordering column --seed 5 --count 3" in run.command()
    assert run.command() in status
    assert cli_main([*cmd[1:], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for i in range(3):
        np.testing.assert_array_equal(np.array(out["samples"][i]["pixels"]).reshape(-1), expected.images[i])
    # Picking a sample loads it (one undo step); the run itself is one undo step too.
    assert tab.pick_sample(2)
    np.testing.assert_array_equal(tab.canvas.pixels.reshape(-1), expected.images[2])
    tab.undo()
    tab.undo()
    assert not tab.canvas.pixels.any()


def test_a_random_ordering_uses_its_seed_as_the_cli_does(window, tab, qtbot, engines):
    set_seed(window, 11)
    assert tab.set_ordering("random", seed=9)
    tab.samples_spin.setValue(1)
    run = run_and_wait(qtbot, tab, tab.sample)
    expected = engine_sample(engines["made"], order_name="random", random_seed=9, seed=11)
    np.testing.assert_array_equal(tab.canvas.pixels.reshape(-1), expected.images[0])
    assert "--ordering random:9 --seed 11" in run.command()


def test_the_ordering_fills_in_visibly_and_stop_ends_at_once(window, tab, qtbot, engines):
    set_seed(window, 2)
    assert tab.set_ordering("column")
    tab.samples_spin.setValue(2)
    tab.canvas.set_state(pixels=digit(3))
    before = tab.canvas.pixels.copy()
    tab.set_speed(10)  # ten positions a second: 16 would take 1.6 s
    run = tab.sample()
    qtbot.waitUntil(lambda: run.n >= 2 * 3, timeout=RUN_TIMEOUT_MS)
    pending = tab.canvas.pending()
    assert pending is not None and not tab.canvas.is_editable()
    column = make_ordering("column", D, H, W)
    n_done = D - int(pending.sum())
    assert 3 <= n_done < D
    # The pixels already drawn are exactly the first ones of the column ordering.
    assert set(np.flatnonzero(~pending.reshape(-1))) == set(column[:n_done].tolist())
    t0 = time.perf_counter()
    tab.stop_button.click()
    qtbot.waitUntil(lambda: not tab.is_running(), timeout=2000)
    assert time.perf_counter() - t0 < 1.0
    n = run.n
    qtbot.wait(250)
    assert run.n == n < 2 * D and run.state == "stopped" and "stopped" in tab.status_text()
    assert tab.canvas.pending() is None and tab.canvas.is_editable()
    tab.undo()  # the drawing from before the run
    np.testing.assert_array_equal(tab.canvas.pixels, before)


# --- scores side by side ------------------------------------------------------------------------
def test_the_digit_is_scored_by_nade_made_and_the_pixelcnn_side_by_side(tab, qtbot, engines):
    px = digit(1)
    assert tab.set_ordering("column")
    tab.canvas.set_state(pixels=px)
    wait_scored(qtbot, tab, px[0])
    x = px.reshape(1, -1).astype(np.float32)
    nade, made = engines["nade"], engines["made"]
    pix_lp = score_images(engines["pixelcnn"], px[None])[0, 0]
    assert tab.model_total("nade") == pytest.approx(float(nade.log_prob(x)[0]), abs=1e-6)
    assert tab.model_total("made") == pytest.approx(float(made.log_prob(x, 3)[0]), abs=1e-6)  # mixture of K = 3
    assert tab.model_total("pixelcnn") == pytest.approx(float(pix_lp.sum()), abs=1e-5)
    # The maps: -log2 p of each pixel given the ones before it in that model's ordering.
    np.testing.assert_allclose(tab.comparison.values("nade"), -nade.conditionals(x)[0].reshape(H, W) / LN2, atol=1e-6)
    column = make_ordering("column", D, H, W)
    np.testing.assert_allclose(tab.comparison.values("made"),
                               -made.conditionals(x, column)[0].reshape(H, W) / LN2, atol=1e-6)
    np.testing.assert_allclose(tab.comparison.values("pixelcnn"), -pix_lp / LN2, atol=1e-5)
    table = tab.comparison.table_text()
    assert [r[1] for r in table] == [f"{tab.model_total(f):.2f}" for f in ("nade", "made", "pixelcnn")]
    assert table[1][0] == f"MADE · {MADE} (K = 3)" and "mixture of the first 3 masks" in tab.comparison.table.item(1, 1).toolTip()
    assert f"log p(x) = {tab.model_total('made'):.2f} nats" in tab.totals.text()
    # K = 1: one mask (the first training one), and the map follows the chosen ordering.
    assert tab.set_k(1)
    assert tab.set_ordering("raster")
    wait_scored(qtbot, tab, px[0])
    assert tab.model_total("made") == pytest.approx(float(made.log_prob(x, 1)[0]), abs=1e-6)
    # Hovering a pixel gives each model's p(ink) there and the pixel's place in the ordering.
    qtbot.mouseMove(tab.canvas, tab.canvas.cell_centre(2, 1))
    qtbot.waitUntil(lambda: "pixel (2, 1)" in tab.hover_info.text(), timeout=2000)
    text = tab.hover_info.text()
    assert "position 10 of 16 in raster order" in text
    p_nade = float(np.exp(nade.conditionals(x)[0, 9]))
    p_ink = p_nade if px[0, 2, 1] else 1 - p_nade
    assert f"p(ink) = {p_ink:.3f}" in text and "PixelCNN" in text


# --- inpainting ------------------------------------------------------------------------------------
def test_made_inpaints_a_scattered_mask_exactly(window, tab, qtbot, engines):
    set_seed(window, 3)
    init, mask = digit(2), scattered_mask()
    tab.canvas.set_state(pixels=init, mask=mask)
    tab.samples_spin.setValue(2)
    run = run_and_wait(qtbot, tab, tab.inpaint)
    out = tab.canvas.pixels
    np.testing.assert_array_equal(out[:, ~mask], init[:, ~mask])  # every kept pixel, bit for bit
    known_mask = ~mask.reshape(-1)
    expected = engine_sample(engines["made"], order_name="raster", seed=3, count=2, known=init.reshape(-1),
                             known_mask=known_mask)
    np.testing.assert_array_equal(out.reshape(-1), expected.images[0])
    np.testing.assert_array_equal(run.results[(0, 1)].image, expected.images[1])
    # Known pixels first in the ordering: the conditional of the masked pixels is exact.
    order = expected.order
    assert known_mask[order[:known_mask.sum()]].all()
    assert run.results[(0, 0)].sampled_logprob == pytest.approx(float(expected.sampled_logprob[0]), abs=1e-6)
    np.testing.assert_array_equal(tab.canvas.mask_layer, mask)  # the mask stays for another try
    status = tab.status_text()
    assert "5 pixels regenerated exactly" in status and "--init INIT.png --mask MASK.png" in status


def test_nade_inpaints_only_masks_after_every_kept_pixel(window, tab, qtbot, engines):
    set_seed(window, 4)
    assert tab.select_model(NADE)
    init = digit(5)
    tab.canvas.set_state(pixels=init, mask=scattered_mask())
    assert tab.inpaint() is None and not tab.is_running()
    assert "NADE cannot inpaint this mask exactly" in tab.status_text() and MADE in tab.status_text()
    np.testing.assert_array_equal(tab.canvas.pixels, init)
    bottom = np.zeros((H, W), bool)
    bottom[2:] = True
    tab.canvas.set_state(mask=bottom)
    tab.samples_spin.setValue(1)
    run_and_wait(qtbot, tab, tab.inpaint)
    expected = engine_sample(engines["nade"], seed=4, known=init.reshape(-1), known_mask=~bottom.reshape(-1))
    np.testing.assert_array_equal(tab.canvas.pixels.reshape(-1), expected.images[0])
    np.testing.assert_array_equal(tab.canvas.pixels[0, :2], init[0, :2])


def test_compare_orderings_runs_the_same_inpainting_under_each_ordering(window, tab, qtbot, engines):
    set_seed(window, 6)
    init, mask = digit(7), scattered_mask()
    tab.canvas.set_state(pixels=init, mask=mask)
    assert tab.set_ordering("random", seed=2)
    run = run_and_wait(qtbot, tab, tab.compare_orderings)
    assert [ln.ordering for ln in run.lanes] == ["raster", "reverse", "column", "random:2"]
    assert tab.lanes.count() == 4 and tab.results.currentWidget() is tab.lanes
    np.testing.assert_array_equal(tab.canvas.pixels, init)  # the canvas is untouched
    for i, ln in enumerate(run.lanes):
        name, rs = work.parse_spec(ln.ordering)
        expected = engine_sample(engines["made"], order_name=name, random_seed=rs, seed=6, known=init.reshape(-1),
                                 known_mask=~mask.reshape(-1))
        np.testing.assert_array_equal(run.results[(i, 0)].image, expected.images[0])
        np.testing.assert_array_equal(tab.lanes.pixels(i).reshape(-1), expected.images[0])
        assert "log p(fill | kept)" in tab.lanes.captions[i].text()
    assert "--ordering {raster|reverse|column|random:2} --seed 6" in tab.status_text()
    assert tab.pick_lane(2)
    np.testing.assert_array_equal(tab.canvas.pixels.reshape(-1), run.results[(2, 0)].image)
    tab.undo()
    np.testing.assert_array_equal(tab.canvas.pixels, init)


# --- bad input -----------------------------------------------------------------------------------------
def test_bad_input_gives_clear_messages_and_loses_nothing(tab, tmp_path):
    px = digit(8)
    tab.canvas.set_state(pixels=px)
    assert tab.inpaint() is None and "mask is empty" in tab.status_text()
    tab.canvas.set_state(mask=np.ones((H, W), bool))
    assert tab.inpaint() is None and "covers every pixel" in tab.status_text()
    assert tab.compare_orderings() is None and "covers every pixel" in tab.status_text()
    assert not tab.set_k(4) and "K = 4 is out of range" in tab.status_text() and "1..3" in tab.status_text()
    assert not tab.set_k(0) and tab.k() == 3
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    assert not tab.load_image(str(bad)) and "not a readable image" in tab.status_text()
    assert not tab.load_image(str(tmp_path / "missing.png")) and "not found" in tab.status_text()
    Image.new("L", (10, 10), 255).save(tmp_path / "mask.png")
    assert not tab.load_mask(str(tmp_path / "mask.png")) and "the mask is 10x10 but the canvas is 4x4" in \
        tab.status_text()
    assert not tab.is_running()
    np.testing.assert_array_equal(tab.canvas.pixels, px)
    assert tab.canvas.mask_layer.all()


def test_any_image_file_becomes_a_binary_digit_with_a_notice(tab, tmp_path):
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[:15, :, :] = (200, 120, 90)  # a brownish top half
    path = tmp_path / "photo.jpg"
    Image.fromarray(rgb).save(path, quality=95)
    assert tab.load_image(str(path))
    status = tab.status_text()
    assert "resized from 40x30 to 4x4" in status and "binarized" in status
    expected = read_image(path, channels=1, height=H, width=W, levels=2).pixels
    np.testing.assert_array_equal(tab.canvas.pixels, expected)
    assert set(np.unique(tab.canvas.pixels)) <= {0, 1}


# --- export ----------------------------------------------------------------------------------------------
def test_export_writes_the_png_and_a_json_whose_command_reproduces_the_inpainting(window, tab, qtbot, tmp_path,
                                                                                     capsys):
    set_seed(window, 9)
    init, mask = digit(4), scattered_mask()
    tab.canvas.set_state(pixels=init, mask=mask)
    tab.samples_spin.setValue(1)
    assert tab.set_ordering("column")
    run_and_wait(qtbot, tab, tab.inpaint)
    png = tmp_path / "out.png"
    assert tab.export_png(str(png))
    back = read_image(png, channels=1, height=H, width=W, levels=2)
    np.testing.assert_array_equal(back.pixels, tab.canvas.pixels)
    settings = json.loads(png.with_suffix(".json").read_text())
    assert settings["model"] == MADE and settings["ordering"] == "column" and settings["ensemble_k"] == 3
    assert {s["family"] for s in settings["scores"]} == {"nade", "made", "pixelcnn"}
    cmd = settings["run"]["commands"][0]
    assert f"--init {tmp_path / 'out-init.png'}" in cmd and f"--mask {tmp_path / 'out-mask.png'}" in cmd
    assert cli_main([*shlex.split(cmd)[1:], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    np.testing.assert_array_equal(np.array(out["samples"][0]["pixels"])[None], tab.canvas.pixels)
    assert not tab.export_png(str(tmp_path / "no-such-folder" / "x.png"))
    assert "does not exist" in tab.status_text()


def test_pending_pixels_show_in_the_canvas_and_thumbnails(tab):
    """The canvas's pending overlay (a small generalisation of the Image tab's canvas)."""
    from studio.image.canvas import PENDING_RGB, to_qimage

    px = np.zeros((1, H, W), np.uint8)
    px[0, 0, 0] = 1
    pending = np.zeros((H, W), bool)
    pending[3, 3] = True
    img = to_qimage(px, 2, pending)
    assert img.pixelColor(0, 0).getRgb()[:3] == (255, 255, 255)
    assert img.pixelColor(3, 3).getRgb()[:3] == PENDING_RGB
    assert img.pixelColor(1, 0).getRgb()[:3] == (0, 0, 0)
    tab.canvas.set_pending(pending)
    np.testing.assert_array_equal(tab.canvas.pending(), pending)
    tab.canvas.set_pending(None)
    assert tab.canvas.pending() is None


# --- what the recogniser reads ---------------------------------------------------------------------------
def test_the_recogniser_reads_the_density_samples_and_is_not_a_density_model(qtbot, tmp_path):
    from engines.recognise import load_recogniser
    from tests.recogniser_models import export_recogniser_dir, make_image_recogniser

    export_nade_dir(make_nade(dims=784, hidden=4, seed=2), tmp_path, "nade-28",
                    meta={"command": "test", "iter": 0, "data": {"height": 28, "width": 28}})
    export_recogniser_dir(make_image_recogniser(seed=1), tmp_path, "reader")
    judge = load_recogniser(read_card(tmp_path / "reader"))
    gen = shown_window(qtbot, tmp_path, "Density")
    tab = next(gen).tab("Density")
    try:
        assert tab.model_ids() == ["nade-28"]  # the classifier is no density model
        tab.set_speed(math.inf)
        tab.samples_spin.setValue(2)
        run = run_and_wait(qtbot, tab, tab.sample)
        for i in range(2):  # each cell of the grid says what its sample reads as
            v = judge.judge(run.results[(0, i)].image.reshape(1, 28, 28), 2)[0]
            assert tab.grid.item(i).text() == f"{i + 1}: {v.short()}"
        v = judge.judge(tab.canvas.pixels, 2)[0]
        assert tab.reads_as_label.isVisible() and tab.reads_as_text() == f"reads as: {v.short()}"
    finally:
        next(gen, None)  # stop, wait until idle, close


def test_the_tiny_models_have_no_reading(tab, qtbot):
    run_and_wait(qtbot, tab, tab.sample)
    assert not tab.reads_as_label.isVisible() and tab.reads_as_text() == ""


# --- requests: what a run carries, restoring it, the history ----------------------------------------------------
class Recorder:
    """Stands for the studio's history store: what `ctx.record_run_*` hand it."""

    def __init__(self):
        self.started, self.finished = [], {}

    def start_run(self, tab, request_json, parent=None):
        self.started.append((tab, request_json, parent))
        return len(self.started)

    def finish_run(self, run_id, files, summary, status):
        self.finished[run_id] = (files, summary, status)


def test_runs_are_recorded_with_files_that_carry_each_samples_request(window, tab, qtbot, tmp_path):
    from engines.density.request import DensityRequest
    from engines.requests import read_request_file, request_from_json

    window.ctx.history = recorder = Recorder()
    set_seed(window, 21)
    assert tab.set_ordering("reverse")
    tab.samples_spin.setValue(2)
    run = run_and_wait(qtbot, tab, tab.sample)
    assert [(t, DensityRequest.from_json(r)) for t, r, _p in recorder.started] == [("density", run.lanes[0])]
    files, summary, status = recorder.finished[1]
    assert status == "done" and sorted(files) == ["sample_1.png", "sample_2.png"]
    assert summary["logprob"] == pytest.approx(run.results[(0, 0)].order_logprob)
    second = tmp_path / "second.png"
    second.write_bytes(files["sample_2.png"])
    assert request_from_json(read_request_file(second)) == run.lanes[0].for_sample(1)
    np.testing.assert_array_equal((np.asarray(Image.open(second)) > 0).reshape(-1), run.results[(0, 1)].image)
    # Compare orderings: one recorded run per ordering, each with its own request
    recorder.started.clear()
    run = run_and_wait(qtbot, tab, tab.compare_orderings)
    assert [DensityRequest.from_json(r).ordering for _t, r, _p in recorder.started] == [ln.ordering for ln in
                                                                                         run.lanes]


def test_an_exported_sample_carries_its_request_and_the_cli_regenerates_it(window, tab, qtbot, tmp_path, capsys,
                                                                            models_dir):
    from engines.requests import read_request_file, request_from_json

    set_seed(window, 30)
    assert tab.set_ordering("column")
    tab.samples_spin.setValue(3)
    run = run_and_wait(qtbot, tab, tab.sample)
    assert tab.pick_sample(1)
    png = tmp_path / "picked.png"
    assert tab.export_png(str(png))
    request = request_from_json(read_request_file(png))
    assert request == run.lanes[0].for_sample(1) and request.seed == 31
    assert request_from_json(read_request_file(png.with_suffix(".json"))) == request
    again = tmp_path / "again.png"
    assert cli_main(["generate", "--from", str(png), "--out", str(again), "--models-dir", str(models_dir),
                     "--json"]) == 0
    capsys.readouterr()
    assert again.read_bytes() == png.read_bytes()
    # an edited canvas is no longer the sample: its export carries no request
    pixels = tab.canvas.pixels.copy()
    pixels[0, 0, 0] ^= 1
    tab.canvas.set_state(pixels=pixels)
    edited = tmp_path / "edited.png"
    assert tab.export_png(str(edited))
    assert "request" not in json.loads(edited.with_suffix(".json").read_text())


def test_apply_request_restores_an_inpainting_that_runs_again_identically(window, tab, qtbot):
    set_seed(window, 13)
    init, mask = digit(3), scattered_mask()
    tab.canvas.set_state(pixels=init, mask=mask)
    assert tab.set_ordering("random", seed=4)
    assert tab.set_k(2)
    tab.samples_spin.setValue(2)
    first = run_and_wait(qtbot, tab, tab.inpaint)
    request = first.lanes[0]
    assert request.ensemble_k == 2 and request.ordering == "random:4" and request.count == 2
    # the tab moves on: another model, another ordering, another config, a blank canvas
    assert tab.select_model(NADE)
    tab.samples_spin.setValue(5)
    window.ctx.set_decoding_config(DecodingConfig(seed=99, temperature=0.5), "density")
    tab.clear()
    tab.apply_request(request)
    assert tab.model_combo.currentData() == MADE and tab.ordering_spec() == "random:4" and tab.k() == 2
    assert tab.samples_spin.value() == 2 and window.ctx.decoding_config("density") == request.decoding
    np.testing.assert_array_equal(tab.canvas.pixels, init)
    np.testing.assert_array_equal(tab.canvas.mask_layer, mask)
    assert "press <b>Inpaint</b>" in tab.status.text()
    again = run_and_wait(qtbot, tab, tab.inpaint)
    assert again.lanes[0] == request
    for s in range(2):
        np.testing.assert_array_equal(again.results[(0, s)].image, first.results[(0, s)].image)
    # what the tab cannot restore is refused in one line, nothing changed
    from engines.errors import InputError

    with pytest.raises(InputError, match="not installed"):
        tab.apply_request(request.replace(model="no-such-model"))
    with pytest.raises(InputError, match="raster order only"):
        tab.apply_request(request.replace(model=NADE, init=None, mask=None, ensemble_k=None))
    assert tab.model_combo.currentData() == MADE


def test_unusable_decoding_is_refused_in_tab_words_and_model_defaults_are_adopted(window, tab):
    window.ctx.set_decoding_config(DecodingConfig(top_p=0.9, seed=1), "density")
    assert tab.sample() is None
    status = tab.status_text()
    assert status.startswith("top-p 0.9 cannot be used for black-or-white pixels") and "--" not in status
    assert "Decoding panel" in status and "untick it" in status and "Reset to model defaults" in status
    assert tab.select_model(NADE)  # a new model: the tab's config becomes its card's defaults (seed kept)
    config = window.ctx.decoding_config("density")
    assert config.top_p == 1.0 and config.seed == 1
    assert config == window.ctx.model_defaults("density").replace(seed=1)


def test_the_tab_state_survives_a_restart(window, tab, qtbot, models_dir):
    set_seed(window, 17)
    init, mask = digit(5), scattered_mask()
    tab.canvas.set_state(pixels=init, mask=mask)
    assert tab.set_ordering("column")
    assert tab.set_k(1)
    tab.samples_spin.setValue(3)
    run = run_and_wait(qtbot, tab, tab.inpaint)
    assert tab.pick_sample(2)
    state = json.loads(json.dumps(tab.history_state()))
    assert len(json.dumps(state)) < 2_000_000
    second = new_window(qtbot, models_dir)
    other = second.tab("Density")
    other.restore_history_state(state)
    assert other.model_combo.currentData() == MADE and other.ordering_spec() == "column" and other.k() == 1
    assert other.samples_spin.value() == 3
    assert second.ctx.decoding_config("density") == window.ctx.decoding_config("density")
    np.testing.assert_array_equal(other.canvas.pixels.reshape(-1), run.results[(0, 2)].image)
    assert other.run is not None, other.status_text()
    assert other.grid.count() == 3 and other.run.lanes == run.lanes
    assert other.shown_request() == run.lanes[0].for_sample(2)
    assert other.pick_sample(0)
    np.testing.assert_array_equal(other.canvas.pixels.reshape(-1), run.results[(0, 0)].image)
    # a state whose model is gone, or that is garbage, leaves the tab usable with a status line
    other.restore_history_state({**state, "model": "gone-model"})
    assert "no longer installed" in other.status_text()
    other.restore_history_state({"version": 1, "model": MADE, "canvas": {"pixels": [[7]]}})
    assert "could not be restored" in other.status_text()
    assert other.sample() is not None
    qtbot.waitUntil(other.is_idle, timeout=RUN_TIMEOUT_MS)
