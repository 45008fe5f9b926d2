"""Export the speech pipeline (a mel prior + a WaveNet vocoder) into ONE model folder.

Files (roles in the card):

``prior_step.onnx`` (role ``prior_step``): one frame of the prior per call
    ``frame`` (B, n_mels) raw log-mel x_{t-1} (the silence frame before the first), ``position`` (B,) float t,
    ``digit`` (B,), ``speaker`` (B,) int64 (none = n_digits / n_speakers), ``state`` (layers, B, H)
    -> ``logit_pi`` (B, K), ``mean`` (B, K, n_mels), ``scale`` (B, K, n_mels) in raw log-mel units,
    ``stop_logit`` (B,), ``state_out`` (layers, B, H)
``model.onnx``, ``prime.onnx``, ``cond.onnx``, ``step.onnx``: the vocoder's four graphs
    (``engines.training.wavenet_onnx_graph``, local-conditioning variants: ``frames`` (B, n_mels, F + 1)
    raw log-mel with the silence frame first, ``frame_index`` (B, T); ``cond`` (F + 1, 2, L, B, G);
    the step graph's ``cond`` is (K, 2, L, B, G), one row per sample of the call).

The card's ``architecture`` is the vocoder's (so ``engines.audio.model.load_audio_model`` opens
it), ``prior`` the prior's, ``mel`` the frame definition both share. Run as::

    python -m engines.training.export_speech --vocoder runs/fsdd-vocoder/ckpt.pt \\
        --prior runs/fsdd-mel-prior/ckpt.pt --out assets/models/fsdd-speech
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from engines import atomic
from engines.training.export_wavenet import FILES as VOCODER_FILES, architecture, export_onnx
from engines.training.loop import load_checkpoint
from engines.training.mel_prior import MelPrior, MelPriorConfig, MelPriorStep
from engines.training.wavenet import WaveNet, WaveNetConfig
from engines.training.wavenet_onnx_graph import DEFAULT_BLOCK

LN2 = math.log(2)
PRIOR_FILE = "prior_step.onnx"
PRIOR_IO = {"inputs": ["frame", "position", "digit", "speaker", "state"],
            "outputs": ["logit_pi", "mean", "scale", "stop_logit", "state_out"]}
VOCODER_IO = {
    "model": {"inputs": ["audio", "digit", "speaker", "frames", "frame_index"], "outputs": ["logits"]},
    "prime": {"inputs": ["audio", "digit", "speaker", "frames", "frame_index"], "outputs": ["layer_inputs"]},
    "cond": {"inputs": ["frames", "speaker"], "outputs": ["cond"]},
    "step": {"inputs": ["sample", "past", "ring", "cond", "uniforms", "inv_temperature", "ring_slots"],
             "outputs": ["samples", "logits", "layer_inputs", "ring_out"]},
}
DECODING_DEFAULTS = {"strategy": "sample", "temperature": 1.0, "frame_temperature": 0.5}  # benchmarks/tune_speech_defaults.py (README)


def export_prior(prior: MelPrior, path: Path) -> None:
    """Write ``prior_step.onnx`` and check it against the torch step (max |diff| < 1e-4)."""
    prior = prior.float().eval()
    step = MelPriorStep(prior).eval()
    c = prior.config
    B = 2
    example = (torch.randn(B, c.n_mels) - 8.0, torch.tensor([0.0, 3.0]), torch.tensor([1, c.none_digit]),
               torch.tensor([0, c.none_speaker]), torch.randn(c.n_layers, B, c.hidden) * 0.1)
    # checked before it replaces `path`: a failed check or an interrupt leaves the old file or none
    with atomic.atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(step, example, str(tmp), dynamo=False, input_names=PRIOR_IO["inputs"],
                          output_names=PRIOR_IO["outputs"], opset_version=17,
                          dynamic_axes={"frame": {0: "batch"}, "position": {0: "batch"}, "digit": {0: "batch"},
                                        "speaker": {0: "batch"}, "state": {1: "batch"}, "logit_pi": {0: "batch"},
                                        "mean": {0: "batch"}, "scale": {0: "batch"}, "stop_logit": {0: "batch"},
                                        "state_out": {1: "batch"}})
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = sess.run(None, {n: v.numpy() for n, v in zip(PRIOR_IO["inputs"], example)})
        del sess  # Windows cannot rename a file a session still holds open
        with torch.no_grad():
            want = step(*example)
        worst = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
        if worst > 1e-3:
            raise RuntimeError(f"prior_step.onnx differs from torch by {worst:g}")


def _finite(value, scale: float = 1.0):
    return value * scale if isinstance(value, (int, float)) and math.isfinite(value) else None


def build_card(vocoder: WaveNet, prior: MelPrior, vck: dict, pck: dict, *, model_id: str,
               block: int = DEFAULT_BLOCK) -> dict[str, Any]:
    vc, pc = vocoder.config, prior.config
    mel = vck.get("mel") or pck.get("mel")
    # the pipeline's figures come from `chainrule eval --model ID ... --write-card` (both levels, and the
    # recogniser's verdicts on generated and re-spoken clips): the trainers' own evaluations stay in "training"
    metrics: dict[str, Any] = {}
    return {
        "id": model_id,
        "kind": "audio",
        "name": "Speech: mel prior + WaveNet vocoder, spoken digits (FSDD)",
        "description": (
            f"Two autoregressive levels. A frame prior (GRU, {pc.n_layers} x {pc.hidden}, a censored mixture of "
            f"{pc.n_components} Gaussians per {pc.n_mels}-bin log-mel frame, and a stop bit that ends the "
            f"utterance) writes the frames of a digit in a voice; a WaveNet vocoder ({vc.n_layers} layers, "
            f"receptive field {vc.receptive_field} samples) locally conditioned on those frames and the speaker "
            f"speaks them one mu-law sample at a time at {vc.sample_rate} Hz. "
            f"{(vocoder.num_parameters() + prior.num_parameters()) / 1e6:.2f}M parameters in all."),
        "family": "speech",
        "architecture": {**architecture(vc, block), "family": "wavenet-vocoder",
                         "conditioning": "local: log-mel frames (repeated to the sample rate after a per-layer "
                                         "projection); global: speaker (may be none)"},
        "prior": {"family": "mel-prior", **pc.to_dict(), "none_digit": pc.none_digit, "none_speaker": pc.none_speaker,
                  "density": "censored mixture of diagonal Gaussians per frame (floor = digital silence) "
                             "+ Bernoulli stop bit", "parameters": prior.num_parameters()},
        "mel": mel,
        "audio": {"sample_rate": vc.sample_rate, "levels": vc.levels, "encoding": "mu-law", "mu": vc.levels - 1},
        "conditioning": {"digits": list(range(pc.n_digits)), "none_digit": pc.none_digit,
                         "speakers": list(pc.speakers), "none_speaker": pc.none_speaker,
                         "note": "leave --digit / --speaker out to generate without that condition"},
        "parameters": vocoder.num_parameters() + prior.num_parameters(),
        "files": {**VOCODER_FILES, "prior_step": PRIOR_FILE},
        "io": {**VOCODER_IO, "prior_step": PRIOR_IO},
        "data": {"name": "Free Spoken Digit Dataset", "source": (vck.get("data") or {}).get("path", ""),
                 "split": "by take: test = takes 0-4, val = takes 5-9, train = takes 10-49",
                 "train_command": {"vocoder": vck.get("command", ""), "prior": pck.get("command", "")}},
        "training": {
            "vocoder": {"iterations": vck.get("iter", -1) + 1, "trained_seconds": vck.get("trained_s"),
                        "best_val_bits_per_sample": _finite(vck.get("best_val"), 1 / LN2),
                        "final_eval": vck.get("metrics"), "hparams": vck.get("hparams", {})},
            "prior": {"iterations": pck.get("iter", -1) + 1, "trained_seconds": pck.get("trained_s"),
                      "best_val_nats_per_frame": _finite(pck.get("best_val")), "final_eval": pck.get("metrics"),
                      "hparams": pck.get("hparams", {})}},
        "metrics": metrics,
        "decoding_defaults": dict(DECODING_DEFAULTS),
    }


def export_speech(vocoder: WaveNet, prior: MelPrior, folder: str | Path, vck: dict | None = None,
                  pck: dict | None = None, *, model_id: str | None = None, block: int = DEFAULT_BLOCK) -> dict:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if vocoder.config.n_mels != prior.config.n_mels:
        raise ValueError("the vocoder and the prior read different frame sizes")
    export_onnx(vocoder.float().eval(), folder, block)
    export_prior(prior, folder / PRIOR_FILE)
    card = build_card(vocoder, prior, dict(vck or {}), dict(pck or {}), model_id=model_id or folder.name, block=block)
    atomic.write_json(folder / "card.json", card)
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engines.training.export_speech",
                                description="Export a mel prior + WaveNet vocoder into one model folder")
    p.add_argument("--vocoder", required=True, help="vocoder checkpoint (chainrule train vocoder)")
    p.add_argument("--prior", required=True, help="mel prior checkpoint (chainrule train mel-prior)")
    p.add_argument("--out", required=True, help="model folder")
    p.add_argument("--id", default=None)
    p.add_argument("--block", type=int, default=DEFAULT_BLOCK)
    args = p.parse_args(argv)
    vocoder, vck = load_checkpoint(args.vocoder, lambda c: WaveNet(WaveNetConfig(**c)))
    prior, pck = load_checkpoint(args.prior, lambda c: MelPrior(MelPriorConfig(**c)))
    card = export_speech(vocoder, prior, args.out, vck, pck, model_id=args.id, block=args.block)
    card["export_command"] = "python -m engines.training.export_speech " + " ".join(argv or sys.argv[1:])
    atomic.write_json(Path(args.out) / "card.json", card)
    print(json.dumps({k: card[k] for k in ("id", "parameters", "files", "metrics")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
