"""ImageRequest: validation, JSON, the command it stands for, and `chainrule generate --from` on the
PNGs `generate image` writes (each carries its own sample's request), bit for bit, for plain,
inpainting and posterior-aware runs, with the display copy `--scale` adds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from engines.decoding.config import DecodingConfig  # noqa: E402
from engines.errors import ChainruleError, InputError  # noqa: E402
from engines.image.request import ImageRequest, PixelArray  # noqa: E402
from engines.requests import PNG_CHUNK_KEY, read_request_file, request_from_json  # noqa: E402
from tests.cli_helpers import error_line, run_cli, save_png  # noqa: E402
from tests.image_models import export_model_dir, make_pixelcnn  # noqa: E402

pytestmark = pytest.mark.usefixtures("isolated_user_models")
H, W = 5, 6


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("image-request-models")
    export_model_dir(make_pixelcnn(seed=2, height=H, width=W, levels=4, n_classes=3), root, "tiny-grey")
    export_model_dir(make_pixelcnn(seed=3, height=H, width=W, output="bernoulli", levels=2, n_classes=0), root,
                     "tiny-bin")
    return str(root)


def pixels_of(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).copy()


def inputs(tmp_path, levels_255=True):
    rng = np.random.default_rng(4)
    init = rng.integers(0, 2, (H, W)) * 255
    mask = np.zeros((H, W))
    mask[1:3, 1:5] = 255
    return save_png(tmp_path / "init.png", init), save_png(tmp_path / "mask.png", mask)


# --- the request itself ------------------------------------------------------------------------------
def test_json_round_trip_and_the_seed_per_sample_rule():
    init = np.arange(H * W, dtype=np.uint8).reshape(1, H, W) % 4
    mask = np.zeros((H, W), np.uint8)
    mask[2:4, 1:3] = 1
    r = ImageRequest(model="m", decoding=DecodingConfig(seed=7, temperature=1.0), count=3, label=2,
                     init=PixelArray.of(init), mask=PixelArray.of(mask), candidates=5)
    assert r.init.array()[0, 2, 1] == 0  # masked values are stored as 0: they are never read
    back = ImageRequest.from_json(json.loads(json.dumps(r.to_json())))
    assert back == r and request_from_json(r.to_json()) == r
    one = r.for_sample(2)
    assert one.count == 1 and one.seed == 9 and one.init == r.init and one.candidates == 5
    with pytest.raises(InputError):
        ImageRequest(model="m").for_sample(0)  # no seed yet
    assert ImageRequest(model="m").resolved().seed is not None


@pytest.mark.parametrize("kwargs, words", [
    (dict(count=0), "count 0 is invalid"),
    (dict(candidates=4), "need an init image and a mask"),
    (dict(guidance=-1), "guidance = -1 is invalid"),
    (dict(decoding=DecodingConfig(strategy="beam")), "beam"),
    (dict(label=-2), "label -2 is invalid"),
])
def test_bad_requests_are_refused_in_words_the_cli_and_studio_both_show(kwargs, words):
    with pytest.raises(ChainruleError) as err:
        ImageRequest(model="m", **kwargs)
    assert words in str(err.value) and "--" not in str(err.value)


def test_candidates_need_plain_sampling_and_no_guidance():
    init, mask = PixelArray.of(np.zeros((1, H, W))), PixelArray.of(np.eye(H, W))
    with pytest.raises(InputError, match="top-p 0.9"):
        ImageRequest(model="m", decoding=DecodingConfig(top_p=0.9), init=init, mask=mask, candidates=3)
    with pytest.raises(InputError, match="guidance"):
        ImageRequest(model="m", label=1, guidance=2.0, init=init, mask=mask, candidates=3)


@pytest.mark.parametrize("hostile", [
    {"shape": [5, 6], "sha256": "0" * 64, "data": "!!!"},
    {"shape": [5000, 5000], "sha256": "0" * 64, "data": ""},
    {"shape": [5, 6], "sha256": "0" * 64, "data": "eJwDAAAAAAE="},  # zlib of nothing: too few values
    {"shape": [5, 6], "sha256": "0" * 64},
])
def test_hostile_pixel_arrays_are_refused_in_one_line(hostile):
    body = ImageRequest(model="m", decoding=DecodingConfig(seed=1), init=PixelArray.of(np.zeros((1, 5, 6))),
                        mask=PixelArray.of(np.eye(5, 6))).to_json()
    body["mask"] = hostile
    with pytest.raises(InputError):
        ImageRequest.from_json(body)
    body2 = dict(body, surprise=1)
    with pytest.raises(InputError, match="unknown field"):
        ImageRequest.from_json(body2)


def test_to_command_reruns_the_request(capsys, models_dir, tmp_path):
    from engines.cli import main
    from engines.registry import get_model

    info = get_model("tiny-grey", [models_dir])
    r = ImageRequest(model="tiny-grey", decoding=DecodingConfig(seed=11, temperature=0.8), count=2, label=1,
                     guidance=1.5)
    args = r.to_command(info)
    assert args[:2] == ["generate", "image"] and "--guidance" in args and "--count" in args
    a, _ = run_cli(capsys, models_dir, *args)
    b, _ = run_cli(capsys, models_dir, *args)
    assert [s["pixels"] for s in a["samples"]] == [s["pixels"] for s in b["samples"]]
    assert ImageRequest.from_json(a["request"]) == r
    assert main  # the same entry point `--from` uses


# --- generate --from, bit for bit --------------------------------------------------------------------
def test_every_png_carries_its_own_sample_and_from_regenerates_it(capsys, models_dir, tmp_path):
    out = tmp_path / "s.png"
    r, _ = run_cli(capsys, models_dir, "generate", "image", "--model", "tiny-grey", "--label", "2", "--seed", "40",
                   "--temperature", "0.9", "--count", "2", "--out", str(out), "--scale", "4")
    second = Path(r["samples"][1]["path"])
    assert second.name == "s_2.png" and Path(r["samples"][1]["display_path"]).name == "s_2@4x.png"
    carried = read_request_file(second)
    assert carried["count"] == 1 and carried["decoding"]["seed"] == 41 and "model_fingerprint" in carried
    assert read_request_file(r["samples"][1]["display_path"]) == carried  # the display copy carries it too
    big = pixels_of(r["samples"][1]["display_path"])
    assert big.shape == (H * 4, W * 4) and np.array_equal(big[::4, ::4], pixels_of(second))
    again = tmp_path / "again.png"
    g, _ = run_cli(capsys, models_dir, "generate", "--from", str(second), "--out", str(again))
    assert g["samples"][0]["pixels"] == r["samples"][1]["pixels"] and g["seed"] == 41
    assert again.read_bytes() == second.read_bytes()  # same pixels, same request: the same file
    # without --out the sample is printed, not written
    g2, _ = run_cli(capsys, models_dir, "generate", "--from", str(r["samples"][0]["path"]))
    assert g2["samples"][0]["pixels"] == r["samples"][0]["pixels"] and g2["samples"][0]["path"] is None


def test_from_regenerates_an_inpainting_without_its_input_files(capsys, models_dir, tmp_path):
    init, mask = inputs(tmp_path)
    r, _ = run_cli(capsys, models_dir, "generate", "image", "--model", "tiny-bin", "--init", init, "--mask", mask,
                   "--seed", "3", "--count", "2", "--out", str(tmp_path / "fill.png"))
    Path(init).unlink()
    Path(mask).unlink()  # the inputs travel inside the request
    second = r["samples"][1]["path"]
    g, _ = run_cli(capsys, models_dir, "generate", "--from", second, "--out", str(tmp_path / "again.png"))
    assert g["samples"][0]["pixels"] == r["samples"][1]["pixels"]
    assert np.array_equal(pixels_of(tmp_path / "again.png"), pixels_of(second))
    assert g["samples"][0]["n_sampled"] == 8


def test_from_regenerates_a_posterior_aware_completion(capsys, models_dir, tmp_path):
    init, mask = inputs(tmp_path)
    r, _ = run_cli(capsys, models_dir, "generate", "image", "--model", "tiny-bin", "--init", init, "--mask", mask,
                   "--seed", "8", "--candidates", "6", "--count", "2", "--out", str(tmp_path / "post.png"))
    second = r["samples"][1]["path"]
    assert read_request_file(second)["candidates"] == 6
    g, _ = run_cli(capsys, models_dir, "generate", "--from", second, "--out", str(tmp_path / "again.png"))
    s, t = g["samples"][0], r["samples"][1]
    assert s["pixels"] == t["pixels"] and s["posterior"]["chosen"] == t["posterior"]["chosen"]
    assert s["posterior"]["weights"] == pytest.approx(t["posterior"]["weights"])


def test_from_refuses_files_without_a_request_and_bad_scales(capsys, models_dir, tmp_path):
    plain = save_png(tmp_path / "plain.png", np.zeros((H, W)))
    assert PNG_CHUNK_KEY in error_line(capsys, models_dir, "generate", "--from", plain)
    line = error_line(capsys, models_dir, "generate", "image", "--model", "tiny-bin", "--scale", "0")
    assert "scale 0 is invalid" in line
    assert math.isfinite(1.0)
