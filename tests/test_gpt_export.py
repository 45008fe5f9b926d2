"""The GPT ONNX export (KV cache, Optimum naming) matches the torch model.

Every check runs on each way of writing the graph: the default (built with onnx.helper,
standard operators), the MultiHeadAttention variant, and the legacy torch.onnx exporter.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

from engines.training.export_gpt import build_card, export_onnx, input_names, output_names  # noqa: E402
from engines.training.gpt import GPT, GPTConfig  # noqa: E402
from engines.training.gpt_onnx_graph import state_dict_from_initializers  # noqa: E402

ATOL = 1e-4
N_LAYER, N_HEAD, N_EMBD, VOCAB, BLOCK = 2, 2, 16, 11, 32
HEAD_DIM = N_EMBD // N_HEAD


EXPORTS = {"graph": {}, "graph-mha": {"attention": "mha"}, "torch-exporter": {"torch_exporter": True}}


@pytest.fixture(scope="module", params=list(EXPORTS))
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=N_LAYER, n_head=N_HEAD,
                          n_embd=N_EMBD, dropout=0.1, bias=True)).eval()
    # make the (tiny, randomly initialised) weights less uniform so errors would show
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("gpt") / "model.onnx"
    meta = export_onnx(model, path, **EXPORTS[request.param])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return model, sess, meta, path


def _empty_past(batch):
    return [np.zeros((batch, N_HEAD, 0, HEAD_DIM), np.float32) for _ in range(2 * N_LAYER)]


def _run_ort(sess, ids, mask, pos, past):
    feeds = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64),
             "position_ids": pos.astype(np.int64)}
    feeds.update(dict(zip(input_names(N_LAYER)[3:], past)))
    out = sess.run(None, feeds)
    return out[0], out[1:]


def _run_torch(model, ids, mask, pos, past):
    pairs = [(torch.from_numpy(past[2 * i]), torch.from_numpy(past[2 * i + 1])) for i in range(N_LAYER)]
    with torch.no_grad():
        logits, presents = model.forward_with_past(torch.from_numpy(ids).long(), torch.from_numpy(mask).long(),
                                                   torch.from_numpy(pos).long(), pairs)
    flat = [t.numpy() for kv in presents for t in kv]
    return logits.numpy(), flat


def test_io_names_and_single_file(exported):
    _, sess, meta, path = exported
    assert [i.name for i in sess.get_inputs()] == input_names(N_LAYER)
    assert [o.name for o in sess.get_outputs()] == output_names(N_LAYER)
    assert not path.with_name(path.name + ".data").exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]
    assert meta["n_layer"] == N_LAYER and meta["n_head"] == N_HEAD and meta["head_dim"] == HEAD_DIM
    assert meta["vocab_size"] == VOCAB and meta["block_size"] == BLOCK
    for i in sess.get_inputs()[3:]:
        assert i.type == "tensor(float)"
        assert isinstance(i.shape[0], str) and isinstance(i.shape[2], str)  # dynamic batch / past


def test_empty_cache_prompt(exported):
    model, sess, _, _ = exported
    rng = np.random.default_rng(1)
    B, T = 2, 5
    ids = rng.integers(0, VOCAB, (B, T))
    mask = np.ones((B, T), np.int64)
    pos = np.tile(np.arange(T), (B, 1))
    lo, po = _run_ort(sess, ids, mask, pos, _empty_past(B))
    lt, pt = _run_torch(model, ids, mask, pos, _empty_past(B))
    assert lo.shape == (B, T, VOCAB)
    np.testing.assert_allclose(lo, lt, atol=ATOL)
    for a, b in zip(po, pt):
        assert a.shape == (B, N_HEAD, T, HEAD_DIM)
        np.testing.assert_allclose(a, b, atol=ATOL)
    # the cache path equals the training forward
    with torch.no_grad():
        full, _ = model(torch.from_numpy(ids).long())
    np.testing.assert_allclose(lo, full.numpy(), atol=ATOL)


def test_one_token_step_with_cache(exported):
    model, sess, _, _ = exported
    rng = np.random.default_rng(2)
    B, P = 2, 5
    past = [rng.standard_normal((B, N_HEAD, P, HEAD_DIM)).astype(np.float32) for _ in range(2 * N_LAYER)]
    ids = rng.integers(0, VOCAB, (B, 1))
    mask = np.ones((B, P + 1), np.int64)
    pos = np.full((B, 1), P)
    lo, po = _run_ort(sess, ids, mask, pos, past)
    lt, pt = _run_torch(model, ids, mask, pos, past)
    assert lo.shape == (B, 1, VOCAB)
    np.testing.assert_allclose(lo, lt, atol=ATOL)
    for a, b, old in zip(po, pt, past):
        assert a.shape == (B, N_HEAD, P + 1, HEAD_DIM)
        np.testing.assert_allclose(a, b, atol=ATOL)
        np.testing.assert_allclose(a[:, :, :P], old, atol=ATOL)


def test_incremental_equals_full_recompute(exported):
    model, sess, _, _ = exported
    rng = np.random.default_rng(3)
    B, T, extra = 3, 4, 6
    seq = rng.integers(0, VOCAB, (B, T + extra))
    full, _ = _run_ort(sess, seq, np.ones_like(seq), np.tile(np.arange(T + extra), (B, 1)), _empty_past(B))
    with torch.no_grad():
        ref, _ = model(torch.from_numpy(seq).long())
    np.testing.assert_allclose(full, ref.numpy(), atol=ATOL)

    logits, past = _run_ort(sess, seq[:, :T], np.ones((B, T)), np.tile(np.arange(T), (B, 1)), _empty_past(B))
    steps = [logits]
    for t in range(T, T + extra):
        lg, past = _run_ort(sess, seq[:, t:t + 1], np.ones((B, t + 1)), np.full((B, 1), t), past)
        steps.append(lg)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=ATOL)


def test_left_padding_matches_unpadded(exported):
    model, sess, _, _ = exported
    rng = np.random.default_rng(4)
    short = rng.integers(0, VOCAB, 3)
    long = rng.integers(0, VOCAB, 6)
    pad = len(long) - len(short)
    ids = np.stack([np.concatenate([np.zeros(pad, np.int64), short]), long])
    mask = np.stack([np.r_[np.zeros(pad), np.ones(len(short))], np.ones(len(long))]).astype(np.int64)
    pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)  # pads get position 0
    lo, past = _run_ort(sess, ids, mask, pos, _empty_past(2))

    lone, lone_past = _run_ort(sess, short[None], np.ones((1, 3)), np.arange(3)[None], _empty_past(1))
    np.testing.assert_allclose(lo[0, pad:], lone[0], atol=ATOL)
    long_alone, _ = _run_ort(sess, long[None], np.ones((1, 6)), np.arange(6)[None], _empty_past(1))
    np.testing.assert_allclose(lo[1], long_alone[0], atol=ATOL)
    lt, _ = _run_torch(model, ids, mask, pos, _empty_past(2))
    np.testing.assert_allclose(lo, lt, atol=ATOL)
    assert np.isfinite(lo).all()

    # one more step on the padded batch: still equals the unpadded sequences
    nxt = rng.integers(0, VOCAB, (2, 1))
    mask2 = np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1)
    pos2 = pos[:, -1:] + 1
    lo2, _ = _run_ort(sess, nxt, mask2, pos2, past)
    lone2, _ = _run_ort(sess, nxt[:1], np.ones((1, 4)), np.array([[3]]), lone_past)
    np.testing.assert_allclose(lo2[0], lone2[0], atol=ATOL)


def test_card_fields(exported):
    model, _, meta, _ = exported
    ck = {"config": model.config.to_dict(), "vocab": list("abcdefghijk"), "command": "python -m x",
          "data_path": "d.txt", "iter": 9, "best_val": 2.0, "hparams": {}}
    card = build_card(meta, ck, model_id="tiny")
    json.dumps(card)
    assert card["kind"] == "text" and card["files"] == {"decoder": "model.onnx"}
    assert card["tokenizer"] == {"type": "char", "vocab": list("abcdefghijk")}
    assert card["io"]["inputs"] == input_names(N_LAYER)
    assert card["context_length"] == BLOCK and card["metrics"] == {}
    assert card["decoding_defaults"] == {"strategy": "sample", "temperature": 0.8, "top_k": 0, "top_p": 0.95}


def test_left_padded_batch_with_a_cache_and_several_new_tokens(exported):
    """Batch 2, row 0 left-padded (zeros in the cached part of the mask), T = 3 new tokens."""
    model, sess, _, _ = exported
    rng = np.random.default_rng(5)
    B, P, T = 2, 4, 3
    past = [rng.standard_normal((B, N_HEAD, P, HEAD_DIM)).astype(np.float32) for _ in range(2 * N_LAYER)]
    ids = rng.integers(0, VOCAB, (B, T))
    mask = np.ones((B, P + T), np.int64)
    mask[0, :3] = 0
    pos = (np.cumsum(mask, axis=1) - 1)[:, P:]
    lo, po = _run_ort(sess, ids, mask, pos, past)
    lt, pt = _run_torch(model, ids, mask, pos, past)
    np.testing.assert_allclose(lo, lt, atol=ATOL)
    for a, b in zip(po, pt):
        np.testing.assert_allclose(a, b, atol=ATOL)


def test_built_graph_is_small_and_names_its_weights(tmp_path):
    """The default export builds the graph directly: no traced shape plumbing, named weights."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=N_LAYER, n_head=N_HEAD,
                          n_embd=N_EMBD, bias=True)).eval()
    for kwargs, per_layer in (({}, 31), ({"attention": "mha"}, 19)):
        path = tmp_path / f"{kwargs.get('attention', 'ops')}.onnx"
        export_onnx(model, path, **kwargs)
        m = onnx.load(str(path))
        assert m.ir_version <= 8 and {o.domain: o.version for o in m.opset_import}[""] == 17
        ops = [n.op_type for n in m.graph.node]
        assert ops.count("Shape") == 2 and ops.count("Gather") == 2  # the mask, once; the two embeddings
        assert len(ops) <= per_layer * N_LAYER + 20, len(ops)
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
        assert "transformer.h.0.attn.c_attn.weight_t" in inits
        back = state_dict_from_initializers(inits, N_LAYER)
        state = model.state_dict()
        assert sorted(back) == sorted(state)
        for k, v in state.items():
            np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)
    # a graph from the torch exporter is not mistaken for a built one
    export_onnx(model, tmp_path / "torch.onnx", torch_exporter=True)
    legacy = onnx.load(str(tmp_path / "torch.onnx"))
    assert state_dict_from_initializers({i.name: onnx.numpy_helper.to_array(i) for i in legacy.graph.initializer},
                                        N_LAYER) is None


def test_reexport_keeps_the_metrics_of_the_earlier_card(tmp_path):
    from engines.training.export_gpt import export_checkpoint

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD))
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"config": model.config.to_dict(), "model": model.state_dict(), "vocab": list("abcdefghijk"),
                "iter": 9, "best_val": 2.0, "hparams": {}, "command": "python -m x", "data_path": "d.txt"}, ckpt)
    out = tmp_path / "tiny"
    first = export_checkpoint(ckpt, out, torch_exporter=True)
    assert first["metrics"] == {}
    metrics = {"d/val": {"nats_per_element": 1.5}}
    (out / "card.json").write_text(json.dumps({**first, "metrics": metrics}))
    card = export_checkpoint(ckpt, out, metrics_from=out / "card.json")  # overwrites that very card
    assert card["metrics"] == metrics
    assert json.loads((out / "card.json").read_text())["metrics"] == metrics
    assert {k: v for k, v in card.items() if k != "metrics"} == {k: v for k, v in first.items() if k != "metrics"}
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "model.onnx"]
