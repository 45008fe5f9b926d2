"""Gated PixelCNN (torch side): causality by perturbation (grey and RGB), no blind spot,
step modules equal to the full network, and ONNX export parity with masks baked in."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from engines.training.export_pixelcnn import example_inputs, export_onnx  # noqa: E402
from engines.training.pixelcnn import PixelStep, RowStep, baked_copy  # noqa: E402
from tests.image_models import make_pixelcnn  # noqa: E402

H, W = 6, 7


def dependency_table_of(model) -> np.ndarray:
    """dep[r, c, ch, r2, c2, ch2]: does output (r, c, ch) change when input (r2, c2, ch2) changes?

    Every single-value perturbation of one random image runs in one batch.
    """
    C, levels = model.config.channels, model.config.levels
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, levels, (1, C, H, W), generator=g).float()
    positions = list(itertools.product(range(H), range(W), range(C)))
    batch = x.repeat(len(positions) + 1, 1, 1, 1)  # (1 + P, C, H, W): row 0 unperturbed
    for i, (r2, c2, ch2) in enumerate(positions, start=1):
        batch[i, ch2, r2, c2] = (batch[i, ch2, r2, c2] + 1) % levels
    with torch.no_grad():
        out = model(batch, torch.ones(len(batch), dtype=torch.long))  # (1 + P, H, W, C, V)
    diff = (out[1:] - out[:1]).abs().amax(-1) > 1e-5  # (P, H, W, C)
    return diff.numpy().reshape(H, W, C, H, W, C).transpose(3, 4, 5, 0, 1, 2).copy()


@functools.lru_cache(maxsize=None)
def dependency_table(channels: int) -> np.ndarray:
    return dependency_table_of(make_pixelcnn(channels=channels, levels=4))


def causality_violations(dep: np.ndarray) -> list[tuple[tuple, tuple]]:
    """Every (output, input) pair, as (row, col, channel) triples, where an output depends on its own
    or a later value in raster/colour order."""
    return [((r, c, ch), (r2, c2, ch2)) for r, c, ch, r2, c2, ch2 in zip(*np.nonzero(dep))
            if (r2, c2, ch2) >= (r, c, ch)]


@pytest.mark.parametrize("channels", [1, 3])
def test_no_output_depends_on_a_later_pixel_or_channel(channels):
    dep = dependency_table(channels)
    bad = causality_violations(dep)
    assert not bad, f"output {bad[0][0]} depends on later input {bad[0][1]} ({len(bad)} such pairs)"
    # the current pixel's own value (and, for colour, later channels) never leaks
    for r, c, ch in itertools.product(range(H), range(W), range(channels)):
        assert not dep[r, c, ch, r, c, ch:].any()


def _leaky(channels: int, leak: str):
    """A PixelCNN with one mask deliberately opened (and weights put on the opened taps)."""
    model = make_pixelcnn(channels=channels, levels=4)
    layer = model.layers[0]
    conv = layer.v_conv if leak == "vertical_current_row" else layer.h_conv
    with torch.no_grad():
        if leak == "vertical_current_row":  # type A vertical mask dropped: row r sees all of row r
            conv.mask[:, :, -1, :] = 1
            conv.conv.weight[:, :, -1, :] = torch.randn_like(conv.conv.weight[:, :, -1, :])
        else:  # type A centre tap opened: a pixel sees its own value (every channel)
            conv.mask[:, :, 0, -1] = 1
            conv.conv.weight[:, :, 0, -1] = torch.randn_like(conv.conv.weight[:, :, 0, -1])
    return model


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("leak", ["vertical_current_row", "own_value"])
def test_the_perturbation_check_catches_a_leaky_layer(channels, leak):
    """Negative control: the same check must fail on a model that really leaks."""
    violations = causality_violations(dependency_table_of(_leaky(channels, leak)))
    assert violations
    if leak == "own_value":  # exactly the subtle leak: an output reading its own input value
        assert any(out == inp for out, inp in violations)
    else:  # and the gross one: outputs reading pixels to their right on the same row
        assert any(inp[0] == out[0] and inp[1] > out[1] for out, inp in violations)


@pytest.mark.parametrize("channels", [1, 3])
def test_no_blind_spot_and_colour_order(channels):
    dep = dependency_table(channels).any(axis=(2, 5))  # pixel level: (H, W, H, W)
    r, c = 3, 2
    # the pixels a plain masked PixelCNN misses: up and to the right
    assert dep[r, c, r - 1, c + 2]
    assert dep[r, c, r - 1, c + 1] and dep[r, c, r - 2, c + 3]
    assert dep[r, c, r, c - 1] and dep[r, c, r - 1, c]
    if channels == 3:
        full = dependency_table(channels)
        assert full[r, c, 1, r, c, 0]  # G sees R of the same pixel
        assert full[r, c, 2, r, c, 0] and full[r, c, 2, r, c, 1]  # B sees R and G


@pytest.mark.parametrize("kw", [dict(), dict(channels=3, levels=5), dict(output="bernoulli", levels=2, n_classes=0),
                                dict(kernel_size=5, first_kernel_size=3)])
def test_step_modules_equal_the_full_network(kw):
    model = baked_copy(make_pixelcnn(**kw))
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, cfg.levels, (2, cfg.channels, H, W), generator=g).float()
    label = torch.tensor([cfg.none_label, 0 if cfg.n_classes else cfg.none_label])
    rows, pixels = RowStep(model), PixelStep(model)
    L, F = cfg.n_layers, cfg.n_filters
    with torch.no_grad():
        full = model(x, label)  # (B, H, W, C, V)
        xs = torch.nn.functional.pad(x, (cfg.pixel_window - 1, 0, cfg.row_window, 0))
        vwin = torch.zeros(2, L - 1, F, cfg.vertical_window, W)
        for r in range(H):
            link, vrow = rows(xs[:, :, r:r + cfg.row_window, cfg.pixel_window - 1:], vwin, label)
            vwin = torch.cat([vwin[:, :, :, 1:], vrow[:, :, :, None]], 3)
            hwin = torch.zeros(2, L - 1, F, cfg.horizontal_window)
            for c in range(W):
                logits, hcol = pixels(xs[:, :, r + cfg.row_window, c:c + cfg.pixel_window], hwin, link[..., c])
                hwin = torch.cat([hwin[..., 1:], hcol[..., None]], -1)
                torch.testing.assert_close(logits, full[:, r, c], atol=1e-5, rtol=1e-5)


def test_masks_are_baked_into_the_exported_weights_and_onnx_matches_torch(tmp_path):
    import onnx
    from onnx import numpy_helper

    model = make_pixelcnn(channels=3, levels=5)
    paths = export_onnx(model, tmp_path)
    baked = baked_copy(model)
    ex = example_inputs(model.config, batch=3)
    modules = {"model": baked, "row_step": RowStep(baked), "pixel_step": PixelStep(baked)}
    names = {"model": ["pixels", "label"], "row_step": ["xwin", "vwin", "label"], "pixel_step": ["xwin", "hwin", "link"]}
    for role, path in paths.items():
        graph = onnx.load(str(path)).graph
        assert not any("mask" in init.name for init in graph.initializer), role
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feeds = {n: t.numpy() for n, t in zip(names[role], ex[role])}
        got = sess.run(None, feeds)
        with torch.no_grad():
            want = modules[role](*ex[role])
        want = want if isinstance(want, tuple) else (want,)
        for g_, w_ in zip(got, want):
            np.testing.assert_allclose(g_, w_.numpy(), atol=1e-4, rtol=1e-4)
    # the masked taps of the first vertical kernel (its current row) are exactly zero in the file
    graph = onnx.load(str(paths["model"])).graph
    weights = [numpy_helper.to_array(i) for i in graph.initializer]
    v0 = [w for w in weights if w.ndim == 4 and w.shape[1] == 3 and w.shape[2] == 3]  # (2F, C, k0//2 + 1, k0)
    assert v0 and all(np.all(w[:, :, -1, :] == 0) for w in v0)


def test_loss_is_nats_per_dimension_and_log_prob_agrees():
    model = make_pixelcnn(output="bernoulli", levels=2, n_classes=0)
    x = torch.randint(0, 2, (3, 1, H, W)).float()
    label = torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        loss = model.loss(model(x, label), x)
        lp = model.log_prob(x, label)
    assert float(loss) == pytest.approx(float(-lp.mean() / (H * W)), rel=1e-5)
