"""The Image tab on tiny exported PixelCNNs: drawing, runs that match the engine, stop, bad input,
the likelihood view, exports and the sample grid."""

from __future__ import annotations

import json
import math
import shlex
import time

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt

pytest.importorskip("torch")

from engines.cli import main as cli_main  # noqa: E402
from engines.decoding.config import DecodingConfig  # noqa: E402
from engines.image.model import load_image_model  # noqa: E402
from engines.image.png import read_image  # noqa: E402
from engines.image.sampler import PixelSampler, posterior_resample, score_image  # noqa: E402
from engines.registry import read_card  # noqa: E402
from studio.image import work  # noqa: E402
from studio.image.drawing import History, brush_offsets, completion_mask, line_cells  # noqa: E402
from tests.image_models import export_model_dir, make_pixelcnn  # noqa: E402
from tests.tab_helpers import RUN_TIMEOUT_MS, new_window, run_and_wait, set_config, shown_window  # noqa: E402

GREY = "tiny-grey"  # 6x7, 4 levels, 3 labels
BINARY = "tiny-binary"  # 6x7, Bernoulli, unconditional

pytestmark = pytest.mark.usefixtures("isolated_model_dirs")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("image-tab-models")
    export_model_dir(make_pixelcnn(seed=3, levels=4, n_classes=3), root, GREY)
    export_model_dir(make_pixelcnn(seed=4, output="bernoulli", levels=2, n_classes=0), root, BINARY)
    return root


@pytest.fixture(scope="module")
def engine_models(models_dir):
    return {name: load_image_model(read_card(models_dir / name)) for name in (GREY, BINARY)}


@pytest.fixture
def window(qtbot, models_dir):
    yield from shown_window(qtbot, models_dir, "Image")


@pytest.fixture
def tab(window):
    t = window.tab("Image")
    assert t.select_model(GREY)
    t.set_speed(math.inf)
    return t


def stroke(qtbot, canvas, cells, button=Qt.MouseButton.LeftButton):
    qtbot.mousePress(canvas, button, pos=canvas.cell_centre(*cells[0]))
    for cell in cells[1:]:
        qtbot.mouseMove(canvas, canvas.cell_centre(*cell))
    qtbot.mouseRelease(canvas, button, pos=canvas.cell_centre(*cells[-1]))


def drawing(levels=4, rows=2, seed=0, shape=(6, 7)):
    """Ink in the first `rows` rows (the top of a 'digit'), blank below."""
    rng = np.random.default_rng(seed)
    px = np.zeros((1, *shape), np.uint8)
    px[0, :rows] = rng.integers(1, levels, (rows, shape[1]))
    return px


# --- models -----------------------------------------------------------------------------------
def test_the_tab_lists_image_models_only(window, tab):
    assert "Image" in window.tab_names()
    assert window.tab_names().index("Image") == window.tab_names().index("Text") + 1
    assert tab.model_ids() == [BINARY, GREY]
    assert tab.pages.currentIndex() == 1
    # The digit selector follows the card: 'any' + 3 labels; an unconditional model has none.
    assert [tab.label_combo.itemText(i) for i in range(tab.label_combo.count())] == ["any", "0", "1", "2"]
    assert tab.select_model(BINARY)
    assert not tab.label_combo.isEnabled() and tab.label() is None
    assert tab.ink_slider.isHidden()  # binary models draw ink = 1


def test_without_an_image_model_the_tab_says_how_to_get_one(qtbot, tmp_path):
    w = new_window(qtbot, tmp_path)
    tab = w.tab("Image")
    assert tab.pages.currentIndex() == 0
    assert "No image model installed" in tab.empty_label.text()
    assert "Models" in tab.empty_label.text()
    assert tab.generate() is None  # nothing happens, nothing breaks
    w.close()


# --- drawing ---------------------------------------------------------------------------------------
def test_drawing_with_the_mouse_changes_pixels_and_undo_redo_restore_them(tab, qtbot):
    canvas = tab.canvas
    assert not canvas.pixels.any() and not tab.undo_button.isEnabled()
    tab.ink_slider.setValue(255)
    tab.size_spin.setValue(1)
    stroke(qtbot, canvas, [(1, 1), (1, 5)])
    drawn = canvas.pixels.copy()
    assert drawn[0, 1, 1:6].tolist() == [3] * 5  # the line between the two points, at full ink
    assert int((drawn > 0).sum()) == 5
    assert tab.undo_button.isEnabled()
    # A right-button stroke erases; the mask brush marks the mask layer only.
    stroke(qtbot, canvas, [(1, 3)], Qt.MouseButton.RightButton)
    assert canvas.pixels[0, 1, 3] == 0
    tab.set_tool("mask")
    tab.size_spin.setValue(2)
    stroke(qtbot, canvas, [(4, 2)])
    assert canvas.mask_layer.sum() == 4 and canvas.pixels[0, 1, 3] == 0
    tab.undo()
    assert not canvas.mask_layer.any()
    tab.undo()
    np.testing.assert_array_equal(canvas.pixels, drawn)
    tab.undo()
    assert not canvas.pixels.any() and not tab.undo_button.isEnabled()
    tab.redo()
    np.testing.assert_array_equal(canvas.pixels, drawn)
    tab.clear()
    assert not canvas.pixels.any()
    tab.undo()
    np.testing.assert_array_equal(canvas.pixels, drawn)


def test_drawing_helpers():
    assert brush_offsets(1) == [(0, 0)]
    assert len(brush_offsets(2)) == 4 and len(brush_offsets(3)) == 9
    assert line_cells(0, 0, 2, 4)[0] == (0, 0) and line_cells(0, 0, 2, 4)[-1] == (2, 4)
    h = History(limit=2)
    a, b, c = (np.full((1, 2, 2), v, np.uint8) for v in (1, 2, 3))
    m = np.zeros((2, 2), bool)
    h.push((a, m)), h.push((b, m))
    assert h.undo((c, m))[0][0, 0, 0] == 2 and h.redo((b, m))[0][0, 0, 0] == 3
    px = np.zeros((1, 6, 7), np.uint8)
    px[0, 1, 4] = 2  # the last ink: raster index 11
    mask = completion_mask(px).reshape(-1)
    assert not mask[:12].any() and mask[12:].all()


# --- runs -----------------------------------------------------------------------------------------------
def test_generate_with_a_fixed_seed_paints_and_matches_the_sampler(window, tab, qtbot, engine_models, capsys):
    set_config(window, temperature=0.9, seed=5)
    assert tab.set_label(1)
    batches = []
    tab.runner.events.connect(lambda b: batches.append(len(b)))
    run = run_and_wait(qtbot, tab, tab.generate)
    assert run.state == "done"
    model = engine_models[GREY]
    expected = PixelSampler(model, DecodingConfig(temperature=0.9, seed=5), 5, label=1).run()
    np.testing.assert_array_equal(tab.canvas.pixels, expected.images[0])
    assert run.n == 42 and sum(batches) >= 42  # every value came through the worker's batches
    done = run.results[0]
    assert done.sampled_logprob == pytest.approx(float(expected.sampled_logprobs[0]), abs=1e-4)
    status = tab.status_text()
    assert "seed 5" in status and "digit 1" in status
    assert "--seed 5" in status and "--label 1" in status
    # ... and that command reproduces the image.
    assert cli_main([*shlex.split(run.cli)[1:], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    np.testing.assert_array_equal(np.array(out["samples"][0]["pixels"])[None], tab.canvas.pixels)
    # The run is one undo step: the blank canvas comes back.
    assert tab.canvas.history.can_undo()
    tab.undo()
    assert not tab.canvas.pixels.any()


def test_stop_ends_a_slow_painting_at_once_and_keeps_what_was_painted(window, tab, qtbot):
    set_config(window, seed=1)
    before = drawing(rows=1)
    tab.canvas.set_state(pixels=before)
    tab.set_speed(10)  # ten values a second: 42 would take four seconds
    run = tab.complete()
    qtbot.waitUntil(lambda: run.n >= 2, timeout=RUN_TIMEOUT_MS)
    t0 = time.perf_counter()
    tab.stop_button.click()
    qtbot.waitUntil(lambda: not tab.is_running(), timeout=2000)
    assert time.perf_counter() - t0 < 1.0  # at 10 values a second the rest would take 3 s
    n = run.n
    qtbot.wait(250)
    assert run.n == n < 35 and run.state == "stopped"
    assert "stopped" in tab.status_text()
    np.testing.assert_array_equal(tab.canvas.pixels[0, 0], before[0, 0])  # the drawing above is kept
    assert tab.canvas.is_editable()
    tab.undo()  # the drawing from before the run
    np.testing.assert_array_equal(tab.canvas.pixels, before)


def test_inpaint_keeps_every_unmasked_pixel(window, tab, qtbot, engine_models):
    set_config(window, seed=3)
    rng = np.random.default_rng(1)
    init = rng.integers(0, 4, (1, 6, 7)).astype(np.uint8)
    mask = np.zeros((6, 7), bool)
    mask[2:4, 1:5] = True
    tab.canvas.set_state(pixels=init, mask=mask)
    tab.posterior_check.setChecked(False)  # plain inpainting: one draw from the model's conditionals
    run_and_wait(qtbot, tab, tab.inpaint)
    out = tab.canvas.pixels
    np.testing.assert_array_equal(out[:, ~mask], init[:, ~mask])
    expected = PixelSampler(engine_models[GREY], DecodingConfig(seed=3), 3, init=init, mask=mask).run()
    np.testing.assert_array_equal(out, expected.images[0])
    np.testing.assert_array_equal(tab.canvas.mask_layer, mask)  # the mask stays for another try


def test_posterior_aware_inpainting_reports_the_chosen_candidate(window, tab, qtbot, engine_models):
    set_config(window, seed=8)
    init = drawing(rows=6, seed=2)
    mask = np.zeros((6, 7), bool)
    mask[1:3, 2:5] = True
    tab.canvas.set_state(pixels=init, mask=mask)
    tab.posterior_check.setChecked(True)
    tab.candidates_spin.setValue(4)
    run = run_and_wait(qtbot, tab, tab.inpaint)
    model = engine_models[GREY]
    s = PixelSampler(model, DecodingConfig(seed=8), 8, init=init, mask=mask, batch=4).run()
    post = posterior_resample(model, s.images, mask, 8, None, s.sampled_logprobs)
    np.testing.assert_array_equal(tab.canvas.pixels, post.image)
    done = run.results[0]
    assert done.chosen == post.chosen
    status = tab.status_text()
    assert f"candidate {post.chosen + 1} of 4" in status
    assert f"{post.known_after_logprobs[post.chosen]:.2f} nats" in status


def test_complete_regenerates_only_after_the_drawn_part(window, tab, qtbot, engine_models):
    set_config(window, seed=4)
    init = drawing(rows=2)
    init[0, 2, :3] = [1, 2, 3]  # the last ink: row 2, column 2
    tab.canvas.set_state(pixels=init)
    run_and_wait(qtbot, tab, tab.complete)
    out = tab.canvas.pixels.reshape(-1)
    last = 2 * 7 + 2
    np.testing.assert_array_equal(out[: last + 1], init.reshape(-1)[: last + 1])
    mask = completion_mask(init)
    assert mask.reshape(-1)[last + 1:].all() and not mask.reshape(-1)[: last + 1].any()
    expected = PixelSampler(engine_models[GREY], DecodingConfig(seed=4), 4, init=init, mask=mask).run()
    np.testing.assert_array_equal(tab.canvas.pixels, expected.images[0])


def test_bad_masks_and_labels_give_clear_messages_and_change_nothing(window, tab, qtbot, tmp_path):
    px = drawing(rows=3)
    tab.canvas.set_state(pixels=px)
    assert tab.inpaint() is None
    assert "mask is empty" in tab.status_text()
    tab.canvas.set_state(mask=np.ones((6, 7), bool))
    assert tab.inpaint() is None
    assert "covers every pixel" in tab.status_text()
    assert not tab.is_running()
    np.testing.assert_array_equal(tab.canvas.pixels, px)
    assert tab.canvas.mask_layer.all()
    # Complete needs a drawing, and something after it.
    tab.clear()
    assert tab.complete() is None and "Nothing is drawn yet" in tab.status_text()
    full = np.ones((1, 6, 7), np.uint8)
    tab.canvas.set_state(pixels=full)
    assert tab.complete() is None and "Nothing to complete" in tab.status_text()
    np.testing.assert_array_equal(tab.canvas.pixels, full)
    # A label the model does not know.
    assert not tab.set_label(7)
    assert "label 7 is out of range" in tab.status_text() and "0–2" in tab.status_text()
    # A mask of another size than the canvas (and no image loaded of that size).
    Image.new("L", (10, 10), 255).save(tmp_path / "mask.png")
    assert not tab.load_mask(str(tmp_path / "mask.png"))
    assert "the mask is 10x10 but the canvas is 7x6" in tab.status_text()
    assert tab.canvas.mask_layer.all()
    # Beam search has no meaning for pixels.
    set_config(window, strategy="beam")
    assert tab.generate() is None and "beam" in tab.status_text()
    np.testing.assert_array_equal(tab.canvas.pixels, full)


def test_loading_a_corrupt_file_keeps_the_drawing(tab, tmp_path):
    px = drawing(rows=3)
    tab.canvas.set_state(pixels=px)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    assert not tab.load_image(str(bad))
    assert "not a readable image" in tab.status_text() and "broken.png" in tab.status_text()
    assert not tab.load_image(str(tmp_path / "missing.png"))
    assert "not found" in tab.status_text()
    np.testing.assert_array_equal(tab.canvas.pixels, px)


def test_loading_an_image_of_another_size_converts_it_with_a_notice(tab, tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:10, :, 0] = 255  # a red top half
    path = tmp_path / "big.png"
    Image.fromarray(rgb).save(path)
    assert tab.load_image(str(path))
    status = tab.status_text()
    assert "resized from 30x20 to 7x6" in status and "colour converted to grey" in status
    expected = read_image(path, channels=1, height=6, width=7, levels=4).pixels
    np.testing.assert_array_equal(tab.canvas.pixels, expected)
    assert tab.canvas.pixels[0, 0].any() and not tab.canvas.pixels[0, -1].any()
    # A mask the size of that loaded image fits it.
    mask = np.zeros((20, 30), np.uint8)
    mask[10:] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    assert tab.load_mask(str(tmp_path / "m.png"))
    assert tab.canvas.mask_layer[-1].all() and not tab.canvas.mask_layer[0].any()
    tab.undo()
    tab.undo()
    assert not tab.canvas.pixels.any()


# --- likelihood ---------------------------------------------------------------------------------------
def test_the_heatmap_total_equals_score_image_and_hover_shows_the_distribution(tab, qtbot, engine_models):
    px = drawing(rows=3, seed=5)
    assert tab.set_label(2)
    tab.canvas.set_state(pixels=px)
    qtbot.waitUntil(lambda: tab.score is not None and np.array_equal(tab.score.pixels, px) and tab.is_idle(),
                    timeout=RUN_TIMEOUT_MS)
    expected = score_image(engine_models[GREY], px, 2)
    assert tab.heatmap_total() == pytest.approx(expected.total, abs=1e-6)
    np.testing.assert_allclose(tab.heatmap.values(), -expected.logprob_map / math.log(2), atol=1e-6)
    assert f"{expected.bits_per_dim:.4f} bits/dim" in tab.totals.text()
    assert f"NLL {-expected.total:.2f} nats" in tab.totals.text()
    # Hovering a pixel shows the model's whole distribution there, the pixel's value marked.
    qtbot.mouseMove(tab.canvas, tab.canvas.cell_centre(1, 3))
    qtbot.waitUntil(lambda: tab.chart.probs is not None, timeout=2000)
    assert tab.chart.probs.shape == (1, 4)
    assert tab.chart.probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert tab.chart.probs[0, px[0, 1, 3]] == pytest.approx(math.exp(expected.logprobs[0, 1, 3]), rel=1e-4)
    assert tab.chart.actual.tolist() == [px[0, 1, 3]]
    assert "pixel (1, 3)" in tab.hover_info.text()


# --- export --------------------------------------------------------------------------------------------
def test_export_png_round_trips_and_the_gif_animates_the_painting(window, tab, qtbot, tmp_path):
    set_config(window, seed=2)
    run_and_wait(qtbot, tab, tab.generate)
    png = tmp_path / "out.png"
    assert tab.export_png(str(png))
    back = read_image(png, channels=1, height=6, width=7, levels=4)
    assert back.notes == []
    np.testing.assert_array_equal(back.pixels, tab.canvas.pixels)
    gif = tmp_path / "paint.gif"
    assert tab.export_gif(str(gif))
    with Image.open(gif) as im:
        assert im.n_frames > 1
        im.seek(im.n_frames - 1)
        last = np.asarray(im.convert("L"))[:: im.height // 6, :: im.width // 7]
    np.testing.assert_array_equal(last, np.round(tab.canvas.pixels[0].astype(int) * 255 / 3).astype(np.uint8))
    assert not tab.export_png(str(tmp_path / "no-such-folder" / "x.png"))
    assert "does not exist" in tab.status_text()


# --- samples grid ----------------------------------------------------------------------------------------
def test_the_sample_grid_shows_n_thumbnails_and_picking_one_loads_it(window, tab, qtbot, engine_models):
    set_config(window, seed=9)
    tab.samples_spin.setValue(3)
    run = run_and_wait(qtbot, tab, tab.generate)
    assert tab.grid.count() == 3 and tab.grid.isVisibleTo(tab)
    model = engine_models[GREY]
    for i in range(3):  # sample i is seed + i, as `chainrule generate image --count 3 --seed 9`
        expected = PixelSampler(model, DecodingConfig(seed=9), 9 + i).run().images[0]
        np.testing.assert_array_equal(run.results[i].image, expected)
    np.testing.assert_array_equal(tab.canvas.pixels, run.results[0].image)
    item = tab.grid.item(2)
    qtbot.mouseClick(tab.grid.viewport(), Qt.MouseButton.LeftButton, pos=tab.grid.visualItemRect(item).center())
    np.testing.assert_array_equal(tab.canvas.pixels, run.results[2].image)
    assert "seed 11" in tab.status_text()
    tab.undo()  # picking is one undo step
    np.testing.assert_array_equal(tab.canvas.pixels, run.results[0].image)


# --- binary models -------------------------------------------------------------------------------------------
def test_a_binary_model_draws_ink_and_shows_p_ink(window, tab, qtbot, engine_models):
    assert tab.select_model(BINARY)
    stroke(qtbot, tab.canvas, [(0, 0), (0, 6)])
    assert tab.canvas.pixels[0, 0].tolist() == [1] * 7 and tab.canvas.pixels.max() == 1  # binary ink
    set_config(window, seed=6)
    run_and_wait(qtbot, tab, tab.complete)
    model = engine_models[BINARY]
    np.testing.assert_array_equal(tab.canvas.pixels[0, 0], np.ones(7))  # the stroke is kept
    qtbot.mouseMove(tab.canvas, tab.canvas.cell_centre(4, 4))
    qtbot.waitUntil(lambda: tab.chart.probs is not None, timeout=2000)
    assert tab.chart.probs.shape == (1, 2)
    assert tab.heatmap_total() == pytest.approx(score_image(model, tab.canvas.pixels).total, abs=1e-6)


def test_write_gif_needs_frames(tmp_path):
    from engines.errors import InputError

    with pytest.raises(InputError):
        work.write_gif(tmp_path / "x.gif", [], 4)


def test_inpaint_is_posterior_aware_by_default_and_plain_when_settings_rule_it_out(window, tab, qtbot, engine_models):
    assert tab.posterior_check.isChecked()  # the default, chosen from the recognition figures
    mask = np.zeros((6, 7), bool)
    mask[1:3, 2:5] = True
    init = drawing(rows=6, seed=2)
    set_config(window, seed=8, temperature=0.7, top_k=3)
    tab.canvas.set_state(pixels=init, mask=mask)
    run = run_and_wait(qtbot, tab, tab.inpaint)
    assert run.candidates is None  # the weights would be wrong under a tempered, filtered config
    status = tab.status_text()
    assert "plain, not posterior-aware" in status and "temperature 0.7" in status and "top-k 3" in status
    expected = PixelSampler(engine_models[GREY], DecodingConfig(seed=8, temperature=0.7, top_k=3), 8,
                            init=init, mask=mask).run()
    np.testing.assert_array_equal(tab.canvas.pixels, expected.images[0])
    set_config(window, seed=8)
    tab.canvas.set_state(pixels=init, mask=mask)
    run = run_and_wait(qtbot, tab, tab.inpaint)
    assert run.candidates == tab.candidates_spin.value() and "plain" not in tab.status_text()


# --- what the recogniser reads ----------------------------------------------------------------------------
READER = "tiny-image-recogniser"
BIG = "tiny-28x28"  # 28x28 Bernoulli: the recogniser's size


@pytest.fixture(scope="module")
def reader_models_dir(tmp_path_factory):
    from tests.recogniser_models import export_recogniser_dir, make_image_recogniser

    root = tmp_path_factory.mktemp("image-tab-reader-models")
    export_model_dir(make_pixelcnn(seed=5, height=28, width=28, output="bernoulli", levels=2, n_classes=0,
                                   n_filters=4, n_layers=2, head_filters=8), root, BIG)
    export_model_dir(make_pixelcnn(seed=3, levels=4, n_classes=3), root, GREY)  # 6x7: nothing reads it
    export_recogniser_dir(make_image_recogniser(seed=1), root, READER)
    return root


@pytest.fixture
def reader_tab(qtbot, reader_models_dir):
    gen = shown_window(qtbot, reader_models_dir, "Image")
    w = next(gen)
    t = w.tab("Image")
    assert t.select_model(BIG)
    t.set_speed(math.inf)
    yield t
    next(gen, None)


def judged(models_dir, pixels, levels):
    from engines.recognise import load_recogniser

    return load_recogniser(read_card(models_dir / READER)).judge(pixels[None], levels)[0]


def test_the_recogniser_is_no_image_model_and_reads_each_finished_sample(reader_tab, reader_models_dir, qtbot):
    tab = reader_tab
    assert READER not in tab.model_ids() and tab.model_ids() == [BIG, GREY]
    assert tab.reads_as_label.isVisible() and tab.reads_as_text() == ""  # a blank canvas reads as nothing
    tab.samples_spin.setValue(3)
    run = run_and_wait(qtbot, tab, tab.generate)
    for i in range(3):  # every cell of the grid says what its sample reads as
        v = judged(reader_models_dir, run.results[i].image, 2)
        assert run.verdicts[i].label == v.label and tab.grid.item(i).text() == f"{i + 1}: {v.short()}"
        assert f"reads as: {v.short()}" in tab.grid.item(i).toolTip()
    shown = judged(reader_models_dir, tab.canvas.pixels, 2)  # the canvas shows sample 1 at the end
    assert tab.reads_as_text() == f"reads as: {shown.short()}" and shown.label == run.verdicts[0].label
    tip = tab.reads_as_label.toolTip()  # the three most probable digits, and which recogniser read them
    assert READER in tip and all(name in tip for _i, name, _p in shown.top(3))


def test_a_loaded_or_drawn_image_is_read_and_another_geometry_hides_the_label(reader_tab, reader_models_dir, tmp_path):
    tab = reader_tab
    img = np.zeros((28, 28), np.uint8)
    img[5:23, 12:16] = 255
    Image.fromarray(img).save(tmp_path / "one.png")
    assert tab.load_image(str(tmp_path / "one.png"))
    v = judged(reader_models_dir, tab.canvas.pixels, 2)
    assert tab.reads_as_text() == f"reads as: {v.short()}"
    tab.clear()  # an edit: judged again; a blank canvas reads as nothing
    assert tab.reads_as_text() == ""
    assert tab.select_model(GREY)  # 6x7: the recogniser cannot read it, so the tab says nothing
    assert not tab.reads_as_label.isVisible() and tab.reads_as_text() == ""


def test_without_a_recogniser_the_tab_shows_no_reading(tab, qtbot):
    run_and_wait(qtbot, tab, tab.generate)
    assert not tab.reads_as_label.isVisible() and tab.reads_as_text() == ""
