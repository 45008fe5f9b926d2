"""DensityRequest: one NADE/MADE run as a value, carried by every output and run again bit for bit.

Tiny exported NADE and MADE models (3x3 images) from tests/density_models.py: the CLI's PNGs carry
`for_sample(i)`'s request, `chainrule generate --from` makes the same file again (a non-raster
ordering, the second of three samples; a completion whose init and mask files are gone), the
request converts to JSON and to the command that makes the same samples, and decoding a binary
pixel cannot use is refused in words the Decoding panel shows."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # the tiny models are built in torch: skip without the train extra
from PIL import Image  # noqa: E402

from engines.cli import main  # noqa: E402
from engines.decoding.config import DecodingConfig  # noqa: E402
from engines.density.request import DensityRequest, image_input, mask_input, run  # noqa: E402
from engines.errors import DecodingError, InputError  # noqa: E402
from engines.registry import read_card  # noqa: E402
from engines.requests import read_request_file, request_from_json  # noqa: E402
from tests.cli_helpers import error_line, run_cli, save_png  # noqa: E402
from tests.density_models import export_made_dir, export_nade_dir, make_made, make_nade  # noqa: E402

pytestmark = pytest.mark.usefixtures("isolated_user_models")
S = 3
D = S * S
ORDERS = ("raster", "random:1", "column")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("density-request-models")
    export_nade_dir(make_nade(dims=D, hidden=6, seed=2), root, "tiny-nade",
                    meta={"command": "test", "iter": 0, "data": {"height": S, "width": S}})
    export_made_dir(make_made(dims=D, hidden=(12, 10), seed=1), root, "tiny-made", orderings=ORDERS, height=S, width=S)
    return str(root)


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_the_second_of_three_samples_in_a_random_ordering_regenerates_bit_for_bit(capsys, models, tmp_path):
    out = tmp_path / "s.png"
    r, _ = run_cli(capsys, models, "generate", "image", "--model", "tiny-made", "--ordering", "random:7",
                   "--seed", "40", "--count", "3", "--out", str(out))
    second = tmp_path / "s_2.png"
    carried = read_request_file(second)
    request = request_from_json(carried)
    assert request == DensityRequest.from_json(r["request"]).for_sample(1)
    assert (request.count, request.seed, request.ordering) == (1, 41, "random:7")
    assert carried["model_fingerprint"]  # stamped with the model it ran on
    again = tmp_path / "again.png"
    back, _ = run_cli(capsys, models, "generate", "--from", str(second), "--out", str(again))
    assert again.read_bytes() == second.read_bytes()  # pixels and the request they carry
    assert back["samples"][0]["pixels"] == r["samples"][1]["pixels"]
    # without --out: the same pixels, printed
    printed, _ = run_cli(capsys, models, "generate", "--from", str(second))
    assert printed["samples"][0]["pixels"] == r["samples"][1]["pixels"]
    # the other samples differ (the seed rule, not a constant image)
    assert len({_pixels(tmp_path / f"s_{i}.png").tobytes() for i in (1, 2, 3)}) > 1


def test_a_completion_carries_its_init_and_mask_and_needs_neither_file_again(capsys, models, tmp_path):
    image = np.array([[255, 0, 255], [0, 255, 0], [255, 255, 0]])
    mask = np.zeros((S, S))
    mask[[0, 2, 1], [1, 0, 2]] = 255  # scattered: kept pixels before and after each hole
    init_path, mask_path = save_png(tmp_path / "init.png", image), save_png(tmp_path / "mask.png", mask)
    out = tmp_path / "c.png"
    r, _ = run_cli(capsys, models, "generate", "image", "--model", "tiny-made", "--init", init_path, "--mask",
                   mask_path, "--ordering", "column", "--seed", "3", "--out", str(out))
    sample = np.array(r["samples"][0]["pixels"])
    kept = mask == 0
    assert np.array_equal(sample[kept], (image[kept] > 0).astype(int))
    request = request_from_json(read_request_file(out))
    assert request.init.data is not None and request.init.path == init_path and request.mask.path == mask_path
    Path(init_path).unlink()
    Path(mask_path).unlink()
    again = tmp_path / "again.png"
    back, _ = run_cli(capsys, models, "generate", "--from", str(out), "--out", str(again))
    assert back["samples"][0]["pixels"] == r["samples"][0]["pixels"]
    assert again.read_bytes() == out.read_bytes()


def test_the_request_runs_like_the_command_it_converts_to(capsys, models, tmp_path):
    pixels = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]], np.uint8)
    regenerate = np.zeros((S, S), bool)
    regenerate[1:, :] = True
    request = DensityRequest(model="tiny-made", decoding=DecodingConfig(seed=12, temperature=0.7), count=2,
                             ordering="reverse", ensemble_k=2, init=image_input(pixels), mask=mask_input(regenerate))
    assert DensityRequest.from_json(json.loads(json.dumps(request.to_json()))) == request
    info = read_card(Path(models) / "tiny-made")
    events = list(run(request, info))
    finished = events[-1]
    assert [s.seed for s in finished.samples] == [12, 13] and finished.ordering == "reverse"
    assert all(s.k == 2 for s in finished.samples)
    save_png(tmp_path / "INIT.png", pixels * 255)
    save_png(tmp_path / "MASK.png", regenerate * 255)
    argv = request.to_command(info, init_path=str(tmp_path / "INIT.png"), mask_path=str(tmp_path / "MASK.png"))
    assert argv[:2] == ["generate", "image"] and "--ensemble" in argv
    cli, _ = run_cli(capsys, models, *argv)
    assert [s["pixels"] for s in cli["samples"]] == [s.image.reshape(S, S).tolist() for s in finished.samples]
    assert cli["samples"][0]["ensemble_k"] == 2
    assert cli["samples"][0]["ensemble_logprob"] == pytest.approx(finished.samples[0].ensemble_logprob, abs=1e-5)
    # the command parses back into the same request (init and mask by content)
    assert DensityRequest.from_json(cli["request"]).replace(init=request.init, mask=request.mask) == request
    assert DensityRequest.from_json(cli["request"]).init.sha256 == request.init.sha256
    # sample i alone is sample i of the run
    alone = list(run(request.for_sample(1), info))[-1].samples[0]
    assert np.array_equal(alone.image, finished.samples[1].image) and alone.seed == 13


def test_decoding_a_binary_pixel_cannot_use_is_refused_in_panel_words(capsys, models):
    """The request refuses it on creation (the declaration in engines.decoding.support), before any model work."""
    for config, words in ((DecodingConfig(top_p=0.9), "top-p 0.9"), (DecodingConfig(min_p=0.2), "min-p 0.2"),
                          (DecodingConfig(repetition_penalty=1.3), "repetition penalty 1.3")):
        with pytest.raises(DecodingError) as err:
            DensityRequest(model="tiny-made", decoding=config)
        message = str(err.value)
        assert message.startswith(f"{words} cannot be used for black-or-white pixels") and "--" not in message
        assert f"turn it off ({words.rsplit(' ', 1)[0]} " in message
    with pytest.raises(DecodingError, match=r"strategy beam\) is not available"):
        DensityRequest(model="tiny-made", decoding=DecodingConfig(strategy="beam"))
    DensityRequest(model="tiny-made", decoding=DecodingConfig(strategy="greedy"))  # greedy and temperature are fine
    DensityRequest(model="tiny-made", decoding=DecodingConfig(temperature=0.5))
    line = error_line(capsys, models, "generate", "image", "--model", "tiny-made", "--top-p", "0.5")
    assert "top-p 0.5 cannot be used" in line and "turn it off (top-p 1)" in line


def test_bad_requests_are_one_clear_line(capsys, models, tmp_path):
    good = DensityRequest(model="tiny-nade", decoding=DecodingConfig(seed=1)).to_json()
    for change, expected in (({"colour": 1}, "unknown field"), ({"ordering": "column:3"}, "only 'random' takes"),
                             ({"count": 0}, "count"), ({"ensemble_k": 0}, "ensemble K"),
                             ({"kind": "image"}, "image request")):
        with pytest.raises(InputError, match=expected):
            request_from_json({**good, **change}) if "kind" not in change else DensityRequest.from_json(
                {**good, **change})
    with pytest.raises(InputError, match="both the init image and the mask"):
        DensityRequest(model="tiny-made", init=image_input(np.zeros((S, S))))
    # against the model: NADE has raster order only; a mask of another size; a broken embedded image
    nade = read_card(Path(models) / "tiny-nade")
    with pytest.raises(InputError, match="raster order only"):
        next(run(DensityRequest(model="tiny-nade", ordering="column"), nade))
    made = read_card(Path(models) / "tiny-made")
    big = DensityRequest(model="tiny-made", init=image_input(np.zeros((4, 4))), mask=mask_input(np.ones((4, 4))))
    with pytest.raises(InputError, match="4x4 but the model draws 3x3"):
        next(run(big, made))
    with pytest.raises(InputError, match="K must be in 1..3"):
        next(run(DensityRequest(model="tiny-made", ensemble_k=4), made))
    # --from a PNG without a request, or a tampered request: one line each
    plain = save_png(tmp_path / "plain.png", np.zeros((S, S)))
    assert "carries no chainrule request" in error_line(capsys, models, "generate", "--from", plain)
    tampered = tmp_path / "t.json"
    data = DensityRequest(model="tiny-made", decoding=DecodingConfig(seed=1), init=image_input(np.zeros((S, S))),
                          mask=mask_input(np.eye(S, dtype=bool))).to_json()
    data["init"]["sha256"] = "0" * 64
    tampered.write_text(json.dumps(data))
    assert "does not match its sha256" in error_line(capsys, models, "generate", "--from", str(tampered))


def test_the_shown_command_of_a_request_runs(capsys, models):
    request = DensityRequest(model="tiny-nade", decoding=DecodingConfig(seed=5, strategy="greedy"), count=2)
    info = read_card(Path(models) / "tiny-nade")
    command = shlex.join(request.to_command(info))
    assert "--strategy greedy" in command and "--seed 5 --count 2" in command
    r, _ = run_cli(capsys, models, *shlex.split(command))
    assert DensityRequest.from_json(r["request"]) == request


def test_a_display_copy_carries_the_request_and_regenerates_the_model_size_sample(capsys, models, tmp_path):
    out = tmp_path / "d.png"
    run_cli(capsys, models, "generate", "image", "--model", "tiny-nade", "--seed", "5", "--count", "2",
            "--scale", "4", "--out", str(out))
    small, big = _pixels(tmp_path / "d_2.png"), _pixels(tmp_path / "d_2@4x.png")
    assert big.shape == (S * 4, S * 4)
    np.testing.assert_array_equal(big[::4, ::4], small)  # nearest neighbour: every pixel a 4x4 square
    assert read_request_file(tmp_path / "d_2@4x.png") == read_request_file(tmp_path / "d_2.png")
    again = tmp_path / "again.png"
    run_cli(capsys, models, "generate", "--from", str(tmp_path / "d_2@4x.png"), "--out", str(again))
    assert again.read_bytes() == (tmp_path / "d_2.png").read_bytes()
