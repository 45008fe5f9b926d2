"""The text benchmark's torch side reloads the very weights ONNX Runtime runs."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.registry import get_model, shipped_models_dir  # noqa: E402
from engines.text.model import load_text_model  # noqa: E402
from engines.training.bench_torch import gpt_from_onnx, torch_kv_tokens_per_second  # noqa: E402
from engines.training.export_gpt import export_onnx  # noqa: E402
from engines.training.gpt import GPT, GPTConfig  # noqa: E402


@pytest.fixture(scope="module", params=["graph", "torch-exporter"])
def tiny_model_dir(request, tmp_path_factory):
    torch.manual_seed(1)
    cfg = GPTConfig(vocab_size=7, block_size=12, n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=True)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    root = tmp_path_factory.mktemp("models")
    folder = root / "tiny-char"
    folder.mkdir()
    export_onnx(model, folder / "model.onnx", torch_exporter=request.param == "torch-exporter")
    card = {
        "id": "tiny-char", "kind": "text", "files": {"decoder": "model.onnx"}, "context_length": 12,
        "architecture": {"family": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 16, "vocab_size": 7, "bias": True},
        "tokenizer": {"type": "char", "vocab": list("\nabcdef")}, "metrics": {"x": 1},
    }
    (folder / "card.json").write_text(json.dumps(card))
    return root, model


def test_weights_reloaded_from_onnx_reproduce_the_model(tiny_model_dir):
    root, original = tiny_model_dir
    info = get_model("tiny-char", [root])
    reloaded = gpt_from_onnx(info)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 0, 1]])
    with torch.no_grad():
        np.testing.assert_allclose(reloaded(ids)[0].numpy(), original(ids)[0].numpy(), atol=1e-5)


def test_torch_and_onnx_greedy_tokens_agree_through_window_slides(tiny_model_dir):
    root, _ = tiny_model_dir
    info = get_model("tiny-char", [root])
    model = load_text_model(info)
    from engines.decoding.config import DecodingConfig
    from engines.generation import generate_steps
    from engines.text.decoder import KVCacheStepModel

    ctx = [1, 2, 3]
    onnx_tokens = [e.value for e in generate_steps(KVCacheStepModel(model.decoder), [ctx], DecodingConfig(strategy="greedy"), 40, seed=0)]
    _, torch_tokens = torch_kv_tokens_per_second(info, ctx, 40, repeats=1)
    assert torch_tokens == onnx_tokens  # 3 + 40 tokens through a 12-token window: several slides


@pytest.mark.skipif(not (shipped_models_dir() / "shakespeare-char").is_dir(), reason="shipped model not present")
def test_bench_text_reports_the_contract_keys():
    from engines.text.bench import run_text_bench

    r = run_text_bench(repeats=1)
    for key in ("onnx_kv_cache", "onnx_recompute", "torch_kv_cache"):
        assert r[key] > 0
    assert r["same_tokens_recompute"] and r["same_tokens_torch"]
