"""Decoder families beyond GPT-2 (issue 15): Optimum exports of Llama, Mistral, Qwen2, Phi-3 and
GPT-NeoX, an onnxruntime-genai folder, external-data weights and the free-memory check.

The fixtures are tiny trained models built by tests/fixtures/make_tiny_families.py, whose
reference.json holds transformers' own greedy tokens and log-probabilities for each prompt; the
engine must reproduce both (log-probabilities to 1e-3) from the committed ONNX files alone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engines.decoding.config import DecodingConfig
from engines.decoding.samplers import log_softmax
from engines.errors import ModelLoadError
from engines.registry import get_model, read_card
from engines.text import model as text_model
from engines.text.decoder import KVCacheStepModel, score_tokens
from engines.text.model import check_fits_in_memory, external_data_locations, load_text_model
from engines.text.session import plan_prompt, stream_tokens

FIXTURES = Path(__file__).parent / "fixtures"
FAMILIES = ["llama", "mistral", "qwen2", "phi3", "gpt-neox"]
TOL = 1e-3

pytestmark = pytest.mark.usefixtures("isolated_user_models")


def reference(family: str) -> dict:
    return json.loads((FIXTURES / f"tiny-{family}" / "reference.json").read_text())


def config(family: str) -> dict:
    return json.loads((FIXTURES / f"tiny-{family}" / "config.json").read_text())


_loaded: dict[str, object] = {}


def model_of(folder: str):
    if folder not in _loaded:
        _loaded[folder] = load_text_model(get_model(folder, [FIXTURES]))
    return _loaded[folder]


def greedy(model, ids, n):
    return list(stream_tokens(model, ids, DecodingConfig(strategy="greedy"), n, seed=0))


@pytest.mark.parametrize("family", FAMILIES)
def test_family_is_recognised_with_its_cache_layout_from_the_config(family):
    info = get_model(f"tiny-{family}", [FIXTURES])
    cfg = config(family)
    assert info.usable and info.kind == "text" and info.card["foreign"] == "optimum"
    m = model_of(f"tiny-{family}")
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or heads
    assert m.decoder.cache_dims == (kv, cfg.get("head_dim") or cfg["hidden_size"] // heads)
    past = m.decoder.empty_past(3)
    assert len(past) == 2 * cfg["num_hidden_layers"]
    assert all(a.shape == (3, kv, 0, m.decoder.cache_dims[1]) for a in past.values())
    assert m.decoder.has_position_ids  # rotary families take position ids
    assert m.context_length == min(cfg["max_position_embeddings"], cfg.get("sliding_window") or 1 << 30)


def test_gqa_and_mqa_families_have_fewer_kv_heads_than_query_heads():
    kinds = {f: (config(f)["num_attention_heads"], config(f).get("num_key_value_heads")) for f in FAMILIES}
    assert kinds["mistral"] == (4, 2) and kinds["qwen2"] == (4, 2)  # GQA
    assert kinds["phi3"] == (4, 1) and kinds["llama"] == (2, 1)  # one key/value head (MQA)
    assert config("qwen2")["tie_word_embeddings"] and config("llama")["tie_word_embeddings"]


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_tokens_and_logprobs_match_transformers(family):
    m = model_of(f"tiny-{family}")
    for case in reference(family)["cases"]:
        plan = plan_prompt(m, case["prompt"], len(case["generated_ids"]))
        assert plan.ids == case["prompt_ids"], case["prompt"]  # BOS as transformers' tokenizer adds it
        events = greedy(m, plan.ids, len(case["generated_ids"]))
        assert [e.token_id for e in events] == case["generated_ids"], case["prompt"]
        np.testing.assert_allclose([e.logprob for e in events], case["logprobs"], atol=TOL, rtol=0)
        # Scoring the same tokens through the teacher-forced path agrees too.
        scored = score_tokens(m.decoder, plan.ids, case["generated_ids"])
        np.testing.assert_allclose(scored, case["logprobs"], atol=TOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_batch_gives_each_row_its_own_tokens(family):
    m = model_of(f"tiny-{family}")
    by_length = sorted((c for c in reference(family)["cases"] if c["prompt"]), key=lambda c: len(c["prompt_ids"]))
    cases = [by_length[-1], by_length[0]]
    assert len({len(c["prompt_ids"]) for c in cases}) == 2  # different lengths: one row is padded
    step = KVCacheStepModel(m.decoder)
    logits = step.prefill([c["prompt_ids"] for c in cases])
    rows = [[] for _ in cases]
    lps = [[] for _ in cases]
    for _ in range(len(cases[0]["generated_ids"])):
        lp = log_softmax(logits)
        nxt = lp.argmax(axis=-1)
        for r, t in enumerate(nxt):
            rows[r].append(int(t))
            lps[r].append(float(lp[r, t]))
        logits = step.advance(nxt)
    for r, case in enumerate(cases):
        n = len(case["generated_ids"])
        assert rows[r][:n] == case["generated_ids"], case["prompt"]
        np.testing.assert_allclose(lps[r][:n], case["logprobs"], atol=TOL, rtol=0)


def test_tokenizer_kinds_round_trip_and_show_each_tokens_bytes():
    kinds = {f: json.loads((FIXTURES / f"tiny-{f}" / "tokenizer.json").read_text())["model"]["type"] for f in FAMILIES}
    assert kinds == {"llama": "BPE", "mistral": "BPE", "qwen2": "BPE", "phi3": "Unigram", "gpt-neox": "BPE"}
    text = "ROMEO:\nWhat say'st thou, good Juliet?"
    for family in FAMILIES:
        tk = model_of(f"tiny-{family}").tokenizer
        ids = tk.encode(text)
        # SentencePiece-style tokenizers mark the text's start as a word start ("▁ROMEO"): one space.
        lead = " " if family in ("llama", "mistral", "phi3") else ""
        assert tk.decode(ids) == lead + text, family
        assert b"".join(tk.token_bytes(i) for i in ids).decode("utf-8") == lead + text, family
        assert tk.tk.decode(ids) == text  # the library's own decoder agrees but for that space
    llama = model_of("tiny-llama").tokenizer
    assert llama.byte_fallback and llama.metaspace and llama.add_bos and llama.start_text == "<s>"
    assert llama.token_bytes(llama.tk.token_to_id("<0x0A>")) == b"\n"  # a byte-fallback piece is its byte
    # A character the BPE never saw falls back to its UTF-8 bytes, which decode back to it.
    ids = llama.encode("é☃")
    assert all(llama.tk.id_to_token(i).startswith("<0x") for i in ids[1:]) and llama.decode(ids) == " é☃"
    qwen = model_of("tiny-qwen2").tokenizer
    assert qwen.encode_prompt("ROMEO:") == qwen.encode("ROMEO:")  # no BOS in Qwen2
    assert qwen.eos_id == qwen.tk.token_to_id("<|endoftext|>")


def test_mistral_sliding_window_is_the_engines_window_and_slides():
    m = model_of("tiny-mistral")
    assert config("mistral")["sliding_window"] == 64 == m.context_length < config("mistral")["max_position_embeddings"]
    events = greedy(m, plan_prompt(m, "ROMEO:", 100).ids, 100)
    assert len(events) == 100 and events[-1].window_slides >= 1


# --- onnxruntime-genai -------------------------------------------------------------------------------

def test_genai_folder_reads_names_and_layout_from_genai_config_and_matches_transformers():
    info = get_model("tiny-llama-genai", [FIXTURES])
    genai = json.loads((FIXTURES / "tiny-llama-genai" / "genai_config.json").read_text())["model"]
    assert info.usable and info.card["foreign"] == "genai"
    assert info.card["context_length"] == genai["context_length"]
    m = model_of("tiny-llama-genai")
    dec = genai["decoder"]
    assert m.decoder.cache_dims == (dec["num_key_value_heads"], dec["head_size"])
    assert list(m.decoder.state_map)[:2] == [dec["inputs"]["past_key_names"] % 0, dec["inputs"]["past_value_names"] % 0]
    assert m.tokenizer.eos_id == genai["eos_token_id"] and m.tokenizer.start_id == genai["bos_token_id"]
    # Same weights as tiny-llama (the builder ran on that model): transformers' tokens and log-probs.
    for case in reference("llama")["cases"]:
        ids = plan_prompt(m, case["prompt"], 16).ids
        assert ids == case["prompt_ids"]
        events = greedy(m, ids, len(case["generated_ids"]))
        assert [e.token_id for e in events] == case["generated_ids"]
        np.testing.assert_allclose([e.logprob for e in events], case["logprobs"], atol=TOL, rtol=0)


def test_genai_folder_runs_every_sampler_and_beam_search():
    from engines.text.session import beam_generate

    m = model_of("tiny-llama-genai")
    ids = plan_prompt(m, "ROMEO:", 12).ids
    for cfg in (DecodingConfig(temperature=0.8, top_k=20, seed=3), DecodingConfig(top_p=0.9, seed=4),
                DecodingConfig(min_p=0.05, repetition_penalty=1.3, seed=5), DecodingConfig(typical_p=0.9, seed=6),
                DecodingConfig(mirostat_tau=3.0, seed=7)):
        events = list(stream_tokens(m, ids, cfg, 12, seed=cfg.seed))
        assert len(events) == 12 and all(np.isfinite(e.logprob) and e.top_before for e in events)
    beams = beam_generate(m, ids, DecodingConfig(strategy="beam", num_beams=3), 8)
    assert beams and len(beams[0].token_ids) > 0


def test_genai_graph_refuses_a_left_padded_batch_in_one_line():
    from engines.errors import InputError

    m = model_of("tiny-llama-genai")
    step = KVCacheStepModel(m.decoder)
    with pytest.raises(InputError, match="rows of different lengths"):
        step.prefill([[1, 5, 6, 7], [1, 5]])
    step.prefill([[1, 5, 6], [1, 8, 9]])  # equal rows (beams) run
    assert step.advance(np.array([4, 4])).shape[0] == 2


def test_genai_config_with_a_bad_name_pattern_is_refused_at_listing(tmp_path):
    folder = tmp_path / "bad-genai"
    shutil.copytree(FIXTURES / "tiny-llama-genai", folder)
    cfg = json.loads((folder / "genai_config.json").read_text())
    cfg["model"]["decoder"]["inputs"]["past_key_names"] = "past_key_values.key"  # no %d
    (folder / "genai_config.json").write_text(json.dumps(cfg))
    info = read_card(folder)
    assert not info.usable and "%d" in info.problem


# --- external data, memory, progress ---------------------------------------------------------------

@pytest.fixture
def external_copy(tmp_path):
    """tiny-qwen2 with its weights moved to model.onnx_data (as Optimum writes models over 2 GB)."""
    import onnx

    folder = tmp_path / "qwen2-external"
    shutil.copytree(FIXTURES / "tiny-qwen2", folder)
    proto = onnx.load(str(folder / "model.onnx"))
    onnx.save(proto, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx_data", size_threshold=0)
    return folder


def test_external_data_model_loads_and_matches(external_copy):
    assert external_data_locations(external_copy / "model.onnx") == ["model.onnx_data"]
    assert (external_copy / "model.onnx").stat().st_size < (external_copy / "model.onnx_data").stat().st_size
    info = read_card(external_copy)
    assert info.usable
    m = load_text_model(info)
    case = reference("qwen2")["cases"][0]
    events = greedy(m, case["prompt_ids"], len(case["generated_ids"]))
    assert [e.token_id for e in events] == case["generated_ids"]
    total = check_fits_in_memory(external_copy / "model.onnx", external_copy)
    assert total == sum((external_copy / n).stat().st_size for n in ("model.onnx", "model.onnx_data"))


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/hostname", "sub/../../outside.bin"])
def test_external_data_outside_the_folder_is_refused_before_onnx_runtime_opens_it(external_copy, location):
    import onnx

    proto = onnx.load(str(external_copy / "model.onnx"), load_external_data=False)
    for t in proto.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, str(external_copy / "model.onnx"))
    (external_copy.parent / "outside.bin").write_bytes((external_copy / "model.onnx_data").read_bytes())
    with pytest.raises(ModelLoadError, match="leads outside the model folder"):
        load_text_model(read_card(external_copy))


def test_missing_external_data_is_named(external_copy):
    (external_copy / "model.onnx_data").unlink()
    with pytest.raises(ModelLoadError, match="model.onnx_data.*missing"):
        load_text_model(read_card(external_copy))


def test_a_model_bigger_than_free_memory_is_refused_with_the_sizes(monkeypatch, external_copy):
    stages = []
    monkeypatch.setattr(text_model, "available_memory", lambda: 100_000)
    with pytest.raises(ModelLoadError) as err:
        load_text_model(read_card(external_copy), progress=stages.append)
    msg = str(err.value)
    assert "GiB" in msg and "model.onnx_data" in msg and "free" in msg and "\n" not in msg
    assert stages == []  # refused before the tokenizer or a session was touched
    monkeypatch.setattr(text_model, "available_memory", lambda: 1 << 40)
    load_text_model(read_card(external_copy), progress=stages.append)
    assert stages == ["tokenizer", "session", "ready"]


def test_available_memory_reads_the_system():
    free = text_model.available_memory()
    assert free is None or free > 1 << 20


def test_external_data_scan_of_embedded_weights_is_empty_and_of_garbage_is_an_error(tmp_path):
    assert external_data_locations(FIXTURES / "tiny-llama" / "model.onnx") == []
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07\x3a\xff\xff\xff\xff\x0f")  # graph field claiming 4 GB
    with pytest.raises(ValueError):
        external_data_locations(bad)


# --- the studio --------------------------------------------------------------------------------------

def test_text_work_reports_each_loading_stage_then_the_model():
    from studio.text import work

    info = get_model("tiny-phi3", [FIXTURES])
    work.forget_models()
    gen = work.load_model_events(info)
    stages = []
    try:
        while True:
            stages.append(next(gen))
    except StopIteration as done:
        model = done.value
    assert [s.stage for s in stages] == ["start", "tokenizer", "session", "ready"]
    assert all(isinstance(s, work.ModelLoading) and s.model_id == "tiny-phi3" for s in stages)
    assert model is work.cached_model(info)
    assert list(work.load_model_events(info)) == []  # loaded: no stages, the cached model at once


def test_text_work_raises_a_load_failure_on_the_worker(tmp_path, monkeypatch):
    from studio.text import work

    folder = tmp_path / "tiny-qwen2"
    shutil.copytree(FIXTURES / "tiny-qwen2", folder)
    monkeypatch.setattr(text_model, "available_memory", lambda: 10)
    work.forget_models()
    with pytest.raises(ModelLoadError, match="free"):
        list(work.load_model_events(read_card(folder)))


def test_text_tab_loads_a_llama_folder_shows_the_load_and_generates_transformers_tokens(qtbot):
    from tests.tab_helpers import new_window, set_config

    window = new_window(qtbot, FIXTURES)
    try:
        tab = window.tab("Text")
        assert tab.select_model("tiny-llama")
        set_config(window, strategy="greedy", seed=1)
        case = reference("llama")["cases"][0]
        tab.prompt.setPlainText(case["prompt"])
        tab.max_tokens.setValue(len(case["generated_ids"]))
        from studio.text import work

        work.forget_models()
        stages = []
        on_events = tab._on_events

        def watch(bid, batch):  # the load's stages reach the tab (batches are throttled: a fast load may come
            on_events(bid, batch)  # with its first tokens, so the status line need not show every stage)
            stages.extend(ev.stage for ev in batch if isinstance(ev, work.ModelLoading))

        tab._on_events = watch
        branch = tab.generate()
        qtbot.waitUntil(lambda: not tab.is_running(), timeout=20_000)
        assert branch.token_ids() == case["generated_ids"]
        np.testing.assert_allclose([t.logprob for t in branch.tokens], case["logprobs"], atol=TOL, rtol=0)
        assert stages[:1] == ["start"] and "tokenizer" in stages and stages[-1] == "ready"
        assert "loading" not in tab.status_text()
    finally:
        window.close()


# --- configs that do not fit the graph ----------------------------------------------------------------

def _with_config(tmp_path, family: str, **changes) -> Path:
    folder = tmp_path / f"tiny-{family}-edited"
    shutil.copytree(FIXTURES / f"tiny-{family}", folder)
    cfg = config(family)
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_kv_heads_come_from_the_graph_when_the_config_does_not_say(tmp_path):
    info = read_card(_with_config(tmp_path, "mistral", num_key_value_heads=None))
    m = load_text_model(info)
    assert m.decoder.cache_dims == (2, 8)  # the graph's (batch, 2, length, 8), not n_head = 4
    case = reference("mistral")["cases"][0]
    assert [e.token_id for e in greedy(m, case["prompt_ids"], 16)] == case["generated_ids"]


@pytest.mark.parametrize("changes, words", [
    ({"num_key_value_heads": 4}, "has 2 key/value heads but the model's config says 4"),
    ({"num_key_value_heads": 3}, "n_head = 4 is not a multiple of n_kv_head = 3"),  # refused when listed
    ({"head_dim": 16}, "has 8 head size but the model's config says 16"),
    ({"num_key_value_heads": "two"}, "n_kv_head must be a whole number"),
    ({"num_hidden_layers": 3}, "missing input(s) past_key_values.2.key"),
])
def test_a_config_that_contradicts_the_graph_is_refused_in_one_line(tmp_path, changes, words):
    info = read_card(_with_config(tmp_path, "mistral", **changes))
    if not info.usable:  # refused when listing
        assert words in info.problem
        return
    with pytest.raises(ModelLoadError) as err:
        load_text_model(info)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_an_unsupported_model_type_is_listed_with_the_supported_ones(tmp_path):
    info = read_card(_with_config(tmp_path, "llama", model_type="mamba"))
    assert not info.usable and "'mamba' is not supported" in info.problem and "qwen2" in info.problem


def test_int32_id_inputs_are_fed_as_the_graph_declares_them(tmp_path):
    """Some exporters (onnxruntime-genai for some devices) take int32 ids, masks and positions."""
    import onnx
    from onnx import TensorProto, helper

    folder = tmp_path / "qwen2-int32"
    shutil.copytree(FIXTURES / "tiny-qwen2", folder)
    proto = onnx.load(str(folder / "model.onnx"))
    casts = []
    for inp in proto.graph.input:
        if inp.name in ("input_ids", "attention_mask", "position_ids"):
            inp.type.tensor_type.elem_type = TensorProto.INT32
            for node in proto.graph.node:
                node.input[:] = [f"{inp.name}_i64" if n == inp.name else n for n in node.input]
            casts.append(helper.make_node("Cast", [inp.name], [f"{inp.name}_i64"], to=TensorProto.INT64))
    assert len(casts) == 3
    nodes = casts + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    onnx.save(proto, str(folder / "model.onnx"))
    m = load_text_model(read_card(folder))
    assert m.decoder.dtypes["input_ids"] == np.int32
    for case in reference("qwen2")["cases"][:2]:
        events = greedy(m, case["prompt_ids"], 16)
        assert [e.token_id for e in events] == case["generated_ids"]
        np.testing.assert_allclose([e.logprob for e in events], case["logprobs"], atol=TOL, rtol=0)


def test_a_hub_style_folder_with_the_graph_and_its_external_data_in_onnx_is_recognised(external_copy):
    """onnx-community/... repositories: config.json and tokenizer.json on top, the graph in onnx/."""
    (external_copy / "onnx").mkdir()
    for name in ("model.onnx", "model.onnx_data"):
        (external_copy / name).rename(external_copy / "onnx" / name)
    info = read_card(external_copy)
    assert info.usable and info.card["files"]["decoder"] == "onnx/model.onnx"
    m = load_text_model(info)
    case = reference("qwen2")["cases"][1]
    assert [e.token_id for e in greedy(m, case["prompt_ids"], 16)] == case["generated_ids"]
    assert check_fits_in_memory(external_copy / "onnx" / "model.onnx", external_copy) > 250_000


@pytest.mark.parametrize("folder", ["tiny-llama", "tiny-phi3", "tiny-gpt-neox", "tiny-llama-genai"])
def test_iobinding_transport_gives_the_same_tokens(folder):
    """The transport CUDA uses (state bound as OrtValues), run on the CPU: same tokens, same numbers."""
    m = model_of(folder)
    case = reference(folder.removeprefix("tiny-").removesuffix("-genai"))["cases"][3]
    outs = {}
    for transport in ("numpy", "binding"):
        step = KVCacheStepModel(m.decoder, transport=transport)
        logits, toks, lps = step.prefill([case["prompt_ids"]]), [], []
        for _ in range(len(case["generated_ids"])):
            lp = log_softmax(logits)[0]
            toks.append(int(lp.argmax()))
            lps.append(float(lp.max()))
            logits = step.advance(np.array([toks[-1]]))
        outs[transport] = (toks, lps)
    assert outs["numpy"][0] == outs["binding"][0] == case["generated_ids"]
    np.testing.assert_allclose(outs["binding"][1], case["logprobs"], atol=TOL, rtol=0)


def test_the_qwen2_fixture_chats_with_its_chatml_template_and_ends_turns_at_im_end():
    """The tiny Qwen2 export carries the ChatML template transformers saved (chat_template.jinja): the
    engine renders turns as transformers' apply_chat_template does and ends a reply at <|im_end|>."""
    from engines.text.chat import ChatTurn, chat_of
    from engines.text.model import load_text_model

    model = load_text_model(get_model("tiny-qwen2", [str(FIXTURES)]))
    chat = chat_of(model)
    assert chat is not None
    rendered = chat.render([ChatTurn("system", "Be brief."), ChatTurn("user", "Hello")])
    assert rendered == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
                        "<|im_start|>assistant\n")
    assert model.tokenizer.encode("<|im_end|>") == [2] and 2 in chat.end_ids


@pytest.mark.parametrize("config, context, capped", [
    # Qwen2.5-0.5B's shape: 14 query heads but 2 key/value heads: an 805 MB cache at 32k positions
    ({"model_type": "qwen2", "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
      "hidden_size": 896, "max_position_embeddings": 32768, "vocab_size": 151936}, 32768, None),
    # Llama-3.2-1B's: 128k positions would need 8 GiB of cache: the engine's window becomes 64k
    ({"model_type": "llama", "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
      "hidden_size": 2048, "head_dim": 64, "max_position_embeddings": 131072, "vocab_size": 128256}, 65536, 131072),
])
def test_real_model_shapes_are_listed_with_a_cache_that_fits(tmp_path, config, context, capped):
    """The KV cache is counted with the key/value heads (GQA), and a context longer than the state cap
    allows becomes the engine's (sliding) window instead of making the model unusable."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.onnx").write_bytes(b"")
    shutil.copy(FIXTURES / "tiny-qwen2" / "tokenizer.json", folder / "tokenizer.json")
    info = read_card(folder)
    assert info.usable, info.problem
    assert info.card["context_length"] == context
    assert info.card["architecture"].get("window_capped_from") == capped
