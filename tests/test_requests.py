"""engines.requests: the envelope every stored request has, inputs by content, and reading a request
back from any exported file, all treated as hostile input (one clear InputError, never a crash)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engines import requests as rq
from engines.errors import InputError
from engines.registry import read_card

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "models"


def test_the_envelope_round_trips_and_refuses_other_formats_and_kinds():
    data = rq.envelope("image", {"model": "m", "count": 2})
    assert rq.open_envelope(data, "image") == {"model": "m", "count": 2}
    with pytest.raises(InputError, match="newer chainrule"):
        rq.open_envelope({**data, "chainrule_request": 99})
    with pytest.raises(InputError, match="not a text one"):
        rq.open_envelope(data, "text")
    with pytest.raises(InputError, match="no \"chainrule_request\" marker"):
        rq.open_envelope({"kind": "image"})
    with pytest.raises(InputError, match="kind = 'video' is invalid"):
        rq.open_envelope({"chainrule_request": 1, "kind": "video"})


def test_open_request_checks_fields_model_and_decoding():
    good = rq.envelope("text", {"model": "m", "decoding": {"temperature": 0.5}})
    body, config = rq.open_request(good, "text", ("model", "decoding"))
    assert body["model"] == "m" and config.temperature == 0.5
    with pytest.raises(InputError, match="unknown field"):
        rq.open_request({**good, "colour": 1}, "text", ("model", "decoding"))
    with pytest.raises(InputError, match="must name a model id"):
        rq.open_request({**good, "model": 3}, "text", ("model", "decoding"))
    with pytest.raises(InputError, match="must be an object"):
        rq.open_request({**good, "decoding": [1]}, "text", ("model", "decoding"))


def test_json_depth_and_size_are_capped():
    deep = "[" * 200 + "]" * 200
    with pytest.raises(InputError, match="deeper than"):
        rq.loads_bounded(deep, "x.json")
    with pytest.raises(InputError, match="not valid JSON"):
        rq.loads_bounded("{", "x.json")


def test_an_input_ref_checks_its_hash_wherever_the_bytes_come_from(tmp_path):
    f = tmp_path / "in.bin"
    f.write_bytes(b"abc" * 10)
    ref = rq.InputRef.from_file(f, max_bytes=1000)
    assert ref.data == b"abc" * 10  # small: embedded
    again = rq.InputRef.from_json(json.loads(json.dumps(ref.to_json())), "init")
    assert again == ref and again.read(1000, "init") == b"abc" * 10
    tampered = {**ref.to_json(), "data": "eHl6"}  # base64 of "xyz"
    with pytest.raises(InputError, match="does not match its sha256"):
        rq.InputRef.from_json(tampered, "init")
    by_path = rq.InputRef(sha256=ref.sha256, path=str(f))
    f.write_bytes(b"changed")
    with pytest.raises(InputError, match="not the file this request was made with"):
        by_path.read(1000, "prompt")
    f.unlink()
    with pytest.raises(InputError, match=r"cannot be read .*sha256 " + ref.sha256[:12]):
        by_path.read(1000, "prompt")
    (tmp_path / "big").write_bytes(b"0" * 11)
    with pytest.raises(InputError, match="at most 10"):  # sizes checked before anything is read
        rq.InputRef.from_file(tmp_path / "big", max_bytes=10)


def test_requests_are_read_back_from_png_audio_and_json_and_refused_elsewhere(tmp_path):
    data = rq.envelope("image", {"model": "m"})
    png = tmp_path / "s.png"
    rq.embed_in_png(png, Image.fromarray(np.zeros((3, 3), np.uint8)), data)
    assert rq.read_request_file(png) == data
    plain = tmp_path / "plain.png"
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(plain)
    with pytest.raises(InputError, match="carries no chainrule request"):
        rq.read_request_file(plain)
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not a png at all")
    with pytest.raises(InputError, match="cannot read"):
        rq.read_request_file(fake)
    export = tmp_path / "e.json"
    export.write_text(json.dumps({"tokens": [1, 2], "request": data}))
    assert rq.read_request_file(export) == data
    (tmp_path / "none.json").write_text("{}")
    with pytest.raises(InputError, match="holds no chainrule request"):
        rq.read_request_file(tmp_path / "none.json")
    with pytest.raises(InputError, match="no such file"):
        rq.read_request_file(tmp_path / "missing.png")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(InputError, match="cannot read a request from a .gif"):
        rq.read_request_file(tmp_path / "x.gif")
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(InputError, match="plain text carries no request"):
        rq.read_request_file(tmp_path / "t.txt")


def test_the_fingerprint_notices_a_changed_model(tmp_path):
    folder = tmp_path / "bmnist-nade"
    shutil.copytree(ASSETS / "bmnist-nade", folder)
    info = read_card(folder)
    stamped = rq.stamp(rq.envelope("density", {"model": "bmnist-nade"}), info)
    assert rq.fingerprint_note(stamped, info) is None
    card = json.loads((folder / "card.json").read_text())
    card["metrics"]["retrained"] = {"note": "a new export"}
    (folder / "card.json").write_text(json.dumps(card))
    note = rq.fingerprint_note(stamped, read_card(folder))
    assert note and "has changed since this sample was made" in note
