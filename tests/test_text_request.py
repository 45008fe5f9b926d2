"""TextRequest: validation, JSON, the runner, and `generate text --out` / `generate --from` bit for bit."""

import json
from pathlib import Path

import pytest

from engines.decoding.config import DecodingConfig
from engines.errors import ChainruleError, DecodingError, InputError
from engines.registry import get_model
from engines.requests import read_request_file, request_from_json
from engines.text.model import load_text_model
from engines.text.request import SampleDone, TextDone, TextRequest, TextStarted, TextToken, run
from engines.text.session import plan_prompt, stream_tokens
from tests.cli_helpers import run_cli

pytestmark = pytest.mark.usefixtures("isolated_user_models")
FIXTURES = str(Path(__file__).parent / "fixtures")
MODEL = "tiny-gpt2-optimum"


@pytest.fixture(scope="module")
def info():
    return get_model(MODEL, [FIXTURES])


@pytest.fixture(scope="module")
def gpt2(info):
    return load_text_model(info)


def test_json_round_trip_and_the_seed_per_sample_rule():
    req = TextRequest(model=MODEL, prompt="KING:", max_new_tokens=7, stop=("\n\n",), count=3,
                      decoding=DecodingConfig(top_k=20, seed=40), prefix_ids=(5, 6), prefix_pick=True)
    data = json.loads(json.dumps(req.to_json()))
    assert data["chainrule_request"] == 1 and data["kind"] == "text"
    assert TextRequest.from_json(data) == req == request_from_json(data)
    assert [r.decoding.seed for r in (req.for_sample(0), req.for_sample(2))] == [40, 42]
    assert req.for_sample(1).count == 1 and req.for_sample(1).prefix_ids == (5, 6)
    fresh = TextRequest(model=MODEL).resolved()
    assert isinstance(fresh.decoding.seed, int) and fresh.resolved() is fresh


@pytest.mark.parametrize("change, words", [
    ({"max_new_tokens": 0}, "max new tokens"),
    ({"count": 0}, "count 0"),
    ({"stop": ("",)}, "stop strings"),
    ({"prefix_ids": (-1,)}, "prefix token ids"),
    ({"prefix_pick": True}, "prefix pick"),
    ({"count": 2, "decoding": DecodingConfig(strategy="beam")}, "beam search"),
    ({"model": ""}, "model"),
])
def test_bad_requests_say_which_setting(change, words):
    with pytest.raises(ChainruleError, match=words):
        TextRequest(**{"model": MODEL, **change})


def test_from_json_refuses_unknown_keys_other_kinds_and_bad_decoding():
    good = TextRequest(model=MODEL).to_json()
    with pytest.raises(InputError, match="text request: unknown field"):
        TextRequest.from_json({**good, "temperature": 2})
    with pytest.raises(InputError, match="not a text one"):
        TextRequest.from_json({**good, "kind": "image"})
    with pytest.raises(DecodingError, match="top-p"):
        TextRequest.from_json({**good, "decoding": {"top_p": 0}})


def test_run_streams_the_tokens_stream_tokens_gives_and_a_final_event(gpt2):
    req = TextRequest(model=MODEL, prompt="ROMEO:", max_new_tokens=9, count=2,
                      decoding=DecodingConfig(temperature=1.1, seed=11))
    events = list(run(req, model=gpt2))
    assert isinstance(events[0], TextStarted) and events[0].request.decoding.seed == 11
    assert isinstance(events[-1], TextDone) and not events[-1].stopped
    plan = plan_prompt(gpt2, "ROMEO:", 9)
    for i in range(2):
        expected = list(stream_tokens(gpt2, plan.ids, req.decoding, 9, seed=11 + i))
        got = [e for e in events if isinstance(e, TextToken) and e.sample == i]
        assert [e.value for e in got] == [e.token_id for e in expected]
        assert [e.token.top_after for e in got] == [e.top_after for e in expected]
        assert events[-1].samples[i].text == gpt2.tokenizer.decode([e.token_id for e in expected])
    assert [e.index for e in events if isinstance(e, SampleDone)] == [0, 1]


def test_a_prefix_continues_the_branch_and_its_text_includes_the_prefix(gpt2):
    first = run(TextRequest(model=MODEL, prompt="KING:", max_new_tokens=5, decoding=DecodingConfig(seed=3)),
                model=gpt2)
    prefix = list(first)[-1].samples[0].token_ids
    req = TextRequest(model=MODEL, prompt="KING:", max_new_tokens=6, prefix_ids=prefix,
                      decoding=DecodingConfig(seed=4))
    done = list(run(req, model=gpt2))[-1]
    context = [*plan_prompt(gpt2, "KING:", 6).ids, *prefix]
    expected = [e.token_id for e in stream_tokens(gpt2, context, req.decoding, 6, seed=4)]
    assert list(done.samples[0].token_ids) == expected
    assert done.samples[0].text == gpt2.tokenizer.decode([*prefix, *expected])
    with pytest.raises(InputError, match="no command-line flags"):
        req.to_command()
    with pytest.raises(InputError, match="vocabulary"):
        list(run(req.replace(prefix_ids=(10**7,)), model=gpt2))


def test_should_stop_ends_the_run_and_keeps_the_cut_sample(gpt2):
    seen = []
    req = TextRequest(model=MODEL, prompt="ROMEO:", max_new_tokens=50, count=3, decoding=DecodingConfig(seed=1))
    events = []
    for ev in run(req, model=gpt2, should_stop=lambda: len(seen) >= 4):
        events.append(ev)
        if isinstance(ev, TextToken):
            seen.append(ev)
    done = events[-1]
    assert isinstance(done, TextDone) and done.stopped
    assert len(done.samples) == 1 and len(done.samples[0].token_ids) == 4
    assert done.samples[0].stopped_by == "interrupted"


@pytest.mark.parametrize("decoding", [
    ["--strategy", "greedy"],
    ["--temperature", "1.3", "--top-k", "40", "--seed", "77", "--count", "2"],
])
def test_out_writes_the_request_and_from_regenerates_each_sample_bit_for_bit(capsys, tmp_path, decoding):
    out = tmp_path / "s.txt"
    made, _ = run_cli(capsys, FIXTURES, "generate", "text", "--model", MODEL, "--prompt", "ROMEO:",
                      "--max-new-tokens", "14", "--stop", "\n\n", *decoding, "--out", str(out))
    assert made["request"]["kind"] == "text"
    for i, sample in enumerate(made["samples"]):
        path = Path(sample["path"])
        sidecar = path.with_suffix(".json")
        stored = json.loads(sidecar.read_text())
        assert stored["sample"] == path.name and stored["request"]["count"] == 1
        assert stored["request"]["model_fingerprint"]
        assert stored["request"]["decoding"]["seed"] == made["seed"] + i  # for_sample(i)
        for source in (path, sidecar):  # the .txt (through its sidecar) and the .json itself
            again = tmp_path / f"again_{i}_{source.suffix[1:]}.txt"
            regen, _ = run_cli(capsys, FIXTURES, "generate", "--from", str(source), "--out", str(again))
            assert again.read_bytes() == path.read_bytes()
            assert regen["samples"][0]["token_ids"] == sample["token_ids"]
            assert regen["samples"][0]["logprobs"] == sample["logprobs"]


def test_a_json_out_carries_the_request_and_the_command_reproduces_it(capsys, tmp_path, info):
    out = tmp_path / "s.json"
    made, _ = run_cli(capsys, FIXTURES, "generate", "text", "--model", MODEL, "--prompt", "KING:",
                      "--max-new-tokens", "10", "--top-p", "0.9", "--seed", "5", "--out", str(out))
    data = json.loads(out.read_text())
    assert data["sample"]["text"] == made["samples"][0]["text"]
    request = TextRequest.from_json(read_request_file(out))
    assert request.decoding.top_p == 0.9 and request.decoding.seed == 5
    again, _ = run_cli(capsys, FIXTURES, *request.to_command(info))
    assert again["samples"][0]["text"] == made["samples"][0]["text"]


def test_beam_search_regenerates_from_its_files(capsys, tmp_path):
    out = tmp_path / "b.txt"
    made, _ = run_cli(capsys, FIXTURES, "generate", "text", "--model", MODEL, "--prompt", "KING:",
                      "--max-new-tokens", "6", "--strategy", "beam", "--num-beams", "3",
                      "--num-return-sequences", "2", "--out", str(out))
    assert [Path(s["path"]).name for s in made["samples"]] == ["b_1.txt", "b_2.txt"]
    for i, sample in enumerate(made["samples"]):
        regen, _ = run_cli(capsys, FIXTURES, "generate", "--from", sample["path"], "--out", str(tmp_path / f"r{i}.txt"))
        assert [s["text"] for s in regen["samples"]] == [s["text"] for s in made["samples"]]
        assert [s["beam_score"] for s in regen["samples"]] == [s["beam_score"] for s in made["samples"]]
        assert (tmp_path / f"r{i}_{i + 1}.txt").read_text() == Path(sample["path"]).read_text()
