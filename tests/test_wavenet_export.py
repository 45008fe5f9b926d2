"""WaveNet export: the four ONNX graphs against the torch module, the step graph against the full
graph, the card, the checkpoint CLI, and the step graph's leanness after ONNX Runtime's optimiser."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")  # export needs the train extra: skip without it
import torch.nn.functional as F  # noqa: E402

from engines.audio import mulaw  # noqa: E402
from engines.audio.generate import CachedStepper, generate_audio  # noqa: E402
from engines.audio.model import load_audio_model  # noqa: E402
from engines.registry import read_card  # noqa: E402
from engines.training.bench_wavenet_torch import TorchCachedStepper, torch_generate, wavenet_from_onnx  # noqa: E402
from engines.training.export_wavenet import FILES, IO, export_wavenet, main as export_main  # noqa: E402
from tests.audio_models import SPEAKERS, export_model_dir, make_wavenet  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(torch model, engine model): dilations 1, 2, 1, 2, step block 2 (both kinds of layer)."""
    model = make_wavenet(seed=0)
    folder = export_model_dir(model, tmp_path_factory.mktemp("models"), "tiny-wavenet")
    return model, load_audio_model(read_card(folder))


@pytest.fixture(scope="module")
def deeper(tmp_path_factory):
    """Dilations 1..8 in two stacks with a step block of 4: big and small layers in both stacks."""
    model = make_wavenet(seed=1, layers_per_stack=4, residual_channels=6, gate_channels=5, skip_channels=7)
    folder = tmp_path_factory.mktemp("models") / "deeper"
    export_wavenet(model, folder, {}, block=4)
    return model, load_audio_model(read_card(folder))


def torch_layer_inputs(model, x, digit, speaker) -> np.ndarray:
    """(L, B, T, R): the input of every layer, computed the way WaveNet.forward does."""
    G = model.config.gate_channels
    with torch.no_grad():
        h = model.embed(x).transpose(1, 2)
        cond = model.cond_bias(digit, speaker).unsqueeze(-1)
        out = []
        for l, (conv, rs) in enumerate(zip(model.dilated, model.res_skip)):
            out.append(h.transpose(1, 2).numpy())
            a = conv(F.pad(h, (conv.dilation[0], 0))) + cond[:, l]
            z = torch.tanh(a[:, :G]) * torch.sigmoid(a[:, G:])
            h = h + rs(z)[:, : h.shape[1]]
    return np.stack(out)


@pytest.mark.parametrize("which", ["tiny", "deeper"])
def test_full_graph_and_prime_graph_match_torch(which, request):
    model, am = request.getfixturevalue(which)
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (3, 40), generator=g)
    digit = torch.tensor([0, 9, am.none_digit])  # the last row: no digit, no speaker
    speaker = torch.tensor([2, 0, am.none_speaker])
    with torch.no_grad():
        ref = model(x, digit, speaker).transpose(1, 2).numpy()
    got = am.logits(x.numpy(), digit.numpy(), speaker.numpy())
    assert got.shape == (3, 40, 256)
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)
    li = am.layer_inputs(x.numpy(), digit.numpy(), speaker.numpy())
    np.testing.assert_allclose(li, torch_layer_inputs(model, x, digit, speaker), atol=TOL, rtol=0)


@pytest.mark.parametrize("which", ["tiny", "deeper"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_step_graph_over_a_generated_sequence_equals_the_full_graph(which, temperature, request):
    """Every logit the step graph gave while sampling (several calls, big and small layers, a
    prompt) equals the full network's over the resulting sequence with silence before it."""
    model, am = request.getfixturevalue(which)
    prompt = np.random.default_rng(0).uniform(-0.5, 0.5, 25).astype(np.float32)
    d, s = am.ids(4, "jackson", 2)
    stepper = CachedStepper(am, d, s)
    x = stepper.prime(mulaw.encode(prompt))
    rng = np.random.default_rng(5)
    drawn, logits = [], []
    for n in (1, am.step_block, 1, am.step_block - 1, am.step_block, 2, am.step_block):  # calls of mixed sizes
        classes, _ = stepper.sample(x, rng.random((n, 2)), temperature)
        drawn.append(classes)
        logits.append(stepper.last_logits)
        x = classes[-1]
    drawn, logits = np.concatenate(drawn), np.concatenate(logits)  # (N, B), (N, B, V)
    rf = am.receptive_field
    seq = np.concatenate([np.full((2, rf), mulaw.SILENCE), np.repeat(mulaw.encode(prompt)[None], 2, 0), drawn.T], 1)
    full = am.logits(seq, d, s)[:, rf + len(prompt) - 1:-1]  # the outputs that predicted each drawn sample
    np.testing.assert_allclose(logits.transpose(1, 0, 2), full, atol=TOL, rtol=0)
    with torch.no_grad():
        ref = model(torch.from_numpy(seq), torch.from_numpy(d), torch.from_numpy(s)).transpose(1, 2).numpy()
    np.testing.assert_allclose(logits.transpose(1, 0, 2), ref[:, rf + len(prompt) - 1:-1], atol=TOL, rtol=0)


def test_the_step_graph_samples_by_inverse_cdf_at_the_temperature(tiny):
    """The class drawn in the graph is the count of cumulative probabilities <= u."""
    _, am = tiny
    d, s = am.ids(None, None, 4)
    stepper = CachedStepper(am, d, s)
    x = stepper.prime(np.array([mulaw.SILENCE]))
    u = np.array([[0.0, 0.3, 0.7, 0.999999]])
    for temperature in (1.0, 0.5, 2.0):
        stepper = CachedStepper(am, d, s)
        stepper.prime(np.array([mulaw.SILENCE]))
        classes, _ = stepper.sample(x, u, temperature)
        z = stepper.last_logits[0].astype(np.float64) / temperature
        p = np.exp(z - z.max(1, keepdims=True))
        cdf = np.cumsum(p / p.sum(1, keepdims=True), axis=1)
        expected = np.minimum((cdf <= u[0][:, None]).sum(1), 255)
        np.testing.assert_array_equal(classes[0], expected)
    stepper = CachedStepper(am, d, s)
    stepper.prime(np.array([mulaw.SILENCE]))
    greedy, _ = stepper.sample(x, u, 0.0)
    np.testing.assert_array_equal(greedy[0], stepper.last_logits[0].argmax(1))


def test_torch_step_reads_the_weights_back_and_draws_the_same_samples(tiny):
    model, am = tiny
    back = wavenet_from_onnx(am.info)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, rtol=0, atol=0)
    ours = generate_audio(am, seconds=0.01, seed=7, digit=2, speaker="lucas")
    theirs = torch_generate(back, ours.classes.shape[1], seed=7, digit_id=2, speaker_id=am.speaker_value("lucas"))
    np.testing.assert_array_equal(theirs, ours.classes)
    stepper = TorchCachedStepper(back, np.array([1]), np.array([0]))
    stepper.prime(np.array([mulaw.SILENCE]))
    assert stepper.step(np.array([128])).shape == (1, 256)


def test_card_describes_the_model(tiny, tmp_path):
    model, am = tiny
    card = am.info.card
    cfg = model.config
    assert card["kind"] == "audio" and card["id"] == "tiny-wavenet"
    arch = card["architecture"]
    assert arch["receptive_field"] == cfg.receptive_field == am.receptive_field == 7
    assert arch["dilations"] == [1, 2, 1, 2]
    assert arch["speakers"] == SPEAKERS and arch["none_speaker"] == len(SPEAKERS) and arch["none_digit"] == 10
    assert arch["sample_rate"] == 8000 and arch["levels"] == 256
    assert arch["step_block"] == 2 and arch["step_big_layers"] == [1, 3] and arch["step_small_layers"] == [0, 2]
    assert card["files"] == FILES and card["io"] == IO
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    assert card["decoding_defaults"] == {"strategy": "sample", "temperature": 1.0}
    for role in FILES:  # the io in the card is the graphs' real io
        sess = ort.InferenceSession(str(am.info.file(role)), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == IO[role]["inputs"]
        assert [o.name for o in sess.get_outputs()] == IO[role]["outputs"]


def test_export_cli_from_a_checkpoint_carries_command_and_metrics(tmp_path, capsys):
    model = make_wavenet(seed=4)
    ckpt = tmp_path / "ckpt.pt"
    metrics = {"val": {"nats_per_sample": 3.2, "bits_per_sample": 3.2 / math.log(2), "n_samples": 1000, "n_clips": 4},
               "test": {"nats_per_sample": 3.3, "bits_per_sample": 3.3 / math.log(2), "n_samples": 1200, "n_clips": 5},
               "conditioning": "true digit and speaker"}
    torch.save({"model": model.state_dict(), "config": model.config.to_dict(), "iter": 99, "best_val": 3.1,
                "command": "chainrule train wavenet --data fsdd.npz --out runs/x", "metrics": metrics,
                "data": {"path": "../shared/data/fsdd.npz", "train_clips": 10}, "trained_s": 12.5,
                "hparams": {"lr": 0.002}}, ckpt)
    out = tmp_path / "fsdd-wavenet"
    assert export_main(["--ckpt", str(ckpt), "--out", str(out), "--block", "2"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["id"] == "fsdd-wavenet"
    assert card["data"]["train_command"] == "chainrule train wavenet --data fsdd.npz --out runs/x"
    assert card["training"]["iterations"] == 100 and card["training"]["trained_seconds"] == 12.5
    test = card["metrics"]["fsdd/test"]
    assert test["nats_per_element"] == pytest.approx(3.3)
    assert test["bits_per_dim"] == pytest.approx(3.3 / math.log(2))
    assert test["nats_per_example"] == pytest.approx(3.3 * 1200 / 5) and test["n_examples"] == 5
    assert test["command"] == "chainrule eval --model fsdd-wavenet --data ../shared/data/fsdd.npz --split test"
    assert read_card(out).problem is None
    assert "fsdd/val" in json.loads(capsys.readouterr().out)["metrics"]


def test_step_graph_is_lean_after_the_optimiser(tmp_path):
    """Per sample: 4 nodes per layer (FusedGemm tanh, FusedGemm sigmoid, Mul, Gemm) plus a fixed
    few for the taps, the head and the sampler; no per-layer slicing, no unfused activations."""
    model = make_wavenet(seed=0, layers_per_stack=5)  # 10 layers
    folder = tmp_path / "m"
    export_wavenet(model, folder, {}, block=4)
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "step.opt.onnx")
    ort.InferenceSession(str(folder / "step.onnx"), opts, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(tmp_path / "step.opt.onnx")).graph
    body = next(n for n in graph.node if n.op_type == "Loop").attribute[0].g
    ops = Counter(n.op_type for n in body.node)
    L = model.config.n_layers
    assert ops["FusedGemm"] == 2 * L + 2  # both gates of every layer, and the two Relu head Gemms
    assert ops["Tanh"] == 0 and ops["Sigmoid"] == 0 and ops["Slice"] == 0
    assert ops["Split"] == 1
    assert len(body.node) <= 4 * L + 30, ops  # 29 more: taps 6, head 4, sampler 8, layer inputs 8, misc 3
    assert len(graph.node) <= 15
