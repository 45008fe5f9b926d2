"""Export a trained recogniser (``engines.training.recogniser``) to ONNX + card.json.

The folder is a ``"kind": "classifier"`` model (``engines.recognise`` runs it; ``chainrule judge``
and the studio's "reads as" labels use it). One graph, float32, dynamic batch B:

audio (``"modality": "audio"``): ``mel`` (B, n_mels, T) raw log-mel frames (``engines.audio.mel``
    with the card's ``mel`` spec; T is dynamic too: the network takes the max over time)
    -> ``digit_logits`` (B, 10), ``speaker_logits`` (B, n_speakers)
image (``"modality": "image"``): ``image`` (B, 1, 28, 28) grey in [0, 1] -> ``digit_logits`` (B, 10)

The exporter runs the written graph in ONNX Runtime on random inputs and refuses to finish when
its logits differ from torch's by more than ~1e-4. The folder is written beside the target and
renamed into place, so a failed export never leaves half a model. Run as::

    python -m engines.training.export_recogniser --ckpt runs/fsdd-recogniser/ckpt.pt --out assets/models/fsdd-recogniser
    python -m engines.training.export_recogniser --ckpt runs/mnist-recogniser/ckpt.pt --out assets/models/mnist-recogniser
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines import atomic
from engines.audio.mel import MelSpec
from engines.errors import ChainruleError, InputError
from engines.training.export_density import _atomic_folder, _onnx_export
from engines.training.recogniser import AudioRecogniser, ImageRecogniser

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FILES = {"model": "model.onnx"}
AUDIO_IO = {"model": {"inputs": ["mel"], "outputs": ["digit_logits", "speaker_logits"]}}
IMAGE_IO = {"model": {"inputs": ["image"], "outputs": ["digit_logits"]}}
IMAGE = {"height": 28, "width": 28, "channels": 1, "range": [0.0, 1.0]}
CARD_ORDER = ("id", "kind", "modality", "name", "description", "architecture", "audio", "mel", "image", "labels",
              "parameters", "files", "io", "data", "training", "metrics", "export_check")
TOLERANCE = 1e-4  # ORT vs torch, relative to the logits' scale (max(1, |logit|))


def _parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _check_against_torch(model: torch.nn.Module, path: Path, feeds: dict[str, torch.Tensor],
                         outputs: list[str]) -> float:
    """Largest |ORT - torch| / max(1, |torch|) over the outputs; ChainruleError when over TOLERANCE."""
    from engines.runtime import open_session

    sess = open_session(path, expect_inputs=list(feeds), expect_outputs=outputs, intra_op_threads=1)
    with torch.no_grad():
        want = model(*feeds.values())
    want = want if isinstance(want, tuple) else (want,)
    got = sess.run({k: v.numpy() for k, v in feeds.items()}, outputs)
    worst = 0.0
    for name, w, g in zip(outputs, want, got):
        w = w.numpy()
        if g.shape != w.shape:
            raise ChainruleError(f"{path}: output {name} has shape {g.shape} in ONNX Runtime, {w.shape} in torch")
        worst = max(worst, float(np.max(np.abs(g - w) / np.maximum(1.0, np.abs(w)))))
    if worst > TOLERANCE:
        raise ChainruleError(f"{path}: ONNX Runtime's logits differ from torch's by {worst:.2e} (> {TOLERANCE:g})")
    return worst


def _audio_inputs(model: AudioRecogniser, spec: MelSpec, batch: int, frames: int, seed: int) -> torch.Tensor:
    """(batch, n_mels, frames) log-mel-like frames: silence with a louder stretch in the middle."""
    g = torch.Generator().manual_seed(seed)
    mel = torch.full((batch, model.config.n_mels, frames), spec.silence_value)
    a, b = frames // 4, max(frames // 4 + 1, 3 * frames // 4)
    mel[:, :, a:b] = spec.silence_value + 12.0 * torch.rand(batch, model.config.n_mels, b - a, generator=g)
    return mel


def export_audio(model: AudioRecogniser, folder: str | Path, meta: dict | None = None, *,
                 model_id: str | None = None, export_command: str = "") -> dict:
    """Write model.onnx + card.json for an audio recogniser into `folder`; return the card.
    `meta` is the checkpoint dict (config, data with the "mel" spec, metrics, command, ...)."""
    meta = dict(meta or {})
    folder = Path(folder)
    model = model.float().eval()
    spec = MelSpec(**((meta.get("data") or {}).get("mel") or MelSpec(n_mels=model.config.n_mels).to_dict()))
    if spec.n_mels != model.config.n_mels:
        raise InputError(f"the checkpoint's mel spec has {spec.n_mels} bins but the model reads {model.config.n_mels}")
    io = AUDIO_IO
    check: dict[str, float] = {}

    def write(tmp: Path) -> None:
        path = tmp / FILES["model"]
        _onnx_export(model, (_audio_inputs(model, spec, 2, 60, 0),), path, io["model"]["inputs"],
                     io["model"]["outputs"], {"mel": {0: "batch", 2: "frames"}, "digit_logits": {0: "batch"},
                                              "speaker_logits": {0: "batch"}})
        # Other batch sizes and lengths than traced: the dynamic axes really are dynamic.
        check["max_relative_error"] = max(
            _check_against_torch(model, path, {"mel": _audio_inputs(model, spec, b, t, s)}, io["model"]["outputs"])
            for b, t, s in ((1, 1, 1), (3, 97, 2), (2, 240, 3)))
        atomic.write_json(tmp / "card.json", card)

    c = model.config
    card = _card(meta, model_id=model_id or folder.name, modality="audio", model=model, io=io,
                 export_command=export_command)
    card.update({
        "name": "Spoken digit and speaker recogniser (FSDD)",
        "description": (f"A 1-D convolutional classifier ({_parameters(model) / 1e6:.2f}M parameters) that reads "
                        f"{c.n_mels}-bin log-mel frames of a recording and says which digit is spoken and by which "
                        f"of {len(c.speakers)} speakers. Trained on the mu-law round trip of the Free Spoken Digit "
                        "Dataset, padded with silence at random and augmented (gain, SpecAugment masks), so it "
                        "judges what the audio models generate."),
        "architecture": {"family": "audio-recogniser", "n_mels": c.n_mels, "channels": c.channels,
                         "n_digits": c.n_digits, "n_speakers": len(c.speakers),
                         "body": "4 dilated Conv1d blocks (dilations 1, 2, 4, 1), max over time, two linear heads",
                         "normalisation": "per-bin mean and std of the training frames, inside the graph"},
        "audio": {"sample_rate": spec.sample_rate, "preprocess": "mu-law round trip (mu = 255), then log-mel"},
        "mel": spec.to_dict(),
        "labels": {"digits": list(DIGIT_NAMES[:c.n_digits]), "speakers": list(c.speakers)},
    })
    card["export_check"] = check  # filled by write() before the card is written
    card = _ordered(card)
    _atomic_folder(folder, write)
    return card


def export_image(model: ImageRecogniser, folder: str | Path, meta: dict | None = None, *,
                 model_id: str | None = None, export_command: str = "") -> dict:
    """Write model.onnx + card.json for an image recogniser into `folder`; return the card."""
    meta = dict(meta or {})
    folder = Path(folder)
    model = model.float().eval()
    io = IMAGE_IO
    n_classes = int(model.head[-1].out_features)
    check: dict[str, float] = {}

    def images(batch: int, seed: int) -> torch.Tensor:
        return torch.rand(batch, 1, IMAGE["height"], IMAGE["width"], generator=torch.Generator().manual_seed(seed))

    def write(tmp: Path) -> None:
        path = tmp / FILES["model"]
        _onnx_export(model, (images(2, 0),), path, io["model"]["inputs"], io["model"]["outputs"],
                     {"image": {0: "batch"}, "digit_logits": {0: "batch"}})
        check["max_relative_error"] = max(_check_against_torch(model, path, {"image": images(b, s)},
                                                               io["model"]["outputs"]) for b, s in ((1, 1), (5, 2)))
        atomic.write_json(tmp / "card.json", card)

    card = _card(meta, model_id=model_id or folder.name, modality="image", model=model, io=io,
                 export_command=export_command)
    card.update({
        "name": "Handwritten digit recogniser (MNIST)",
        "description": (f"A small convolutional classifier ({_parameters(model) / 1e6:.2f}M parameters) that reads a "
                        "28x28 grey digit in [0, 1] and says which digit it is. Trained on shifted MNIST digits, half "
                        "of them binarized, so it judges the samples of grey and of binary image models alike."),
        "architecture": {"family": "image-recogniser", "n_classes": n_classes,
                         "body": "2 x (two 3x3 Conv2d, max pool 2), Linear(3136 -> 128), Linear(128 -> classes)"},
        "image": dict(IMAGE),
        "labels": {"digits": list(DIGIT_NAMES[:n_classes])},
    })
    card["export_check"] = check  # filled by write() before the card is written
    card = _ordered(card)
    _atomic_folder(folder, write)
    return card


def _ordered(card: dict) -> dict:
    """The card's fields in reading order (what it is, what it reads, how it was made, what it measured)."""
    return {**{k: card[k] for k in CARD_ORDER if k in card}, **{k: v for k, v in card.items() if k not in CARD_ORDER}}


def _card(meta: dict, *, model_id: str, modality: str, model: torch.nn.Module, io: dict, export_command: str) -> dict:
    """The card fields both recognisers share; `meta` is the checkpoint dict (or a test's stand-in)."""
    data = meta.get("data") or {}
    return {
        "id": model_id,
        "kind": "classifier",
        "modality": modality,
        "parameters": _parameters(model),
        "files": dict(FILES),
        "io": io,
        "data": {"name": "Free Spoken Digit Dataset" if modality == "audio" else "MNIST",
                 **{k: v for k, v in data.items() if k not in ("mel", "path")}, "source": data.get("path", ""),
                 "train_command": meta.get("command", ""), "export_command": export_command},
        "training": {"iterations": meta.get("iter", -1) + 1, "best_val_error": meta.get("best_val"),
                     "trained_seconds": meta.get("trained_s"), "hparams": meta.get("hparams", {})},
        "metrics": _metrics(meta, modality),
    }


def _metrics(meta: dict, modality: str) -> dict[str, Any]:
    """The trainer's final test evaluation (train_recogniser.final_evaluation) as "<data>/test" records."""
    test = ((meta.get("metrics") or {}).get("test")) or {}
    if not test:
        return {}
    stem = Path((meta.get("data") or {}).get("path") or ("fsdd.npz" if modality == "audio" else "mnist.npz")).stem
    if modality == "audio":
        record = {"digit_accuracy": test["digit_accuracy"], "speaker_accuracy": test["speaker_accuracy"],
                  "n_examples": test.get("n_clips")}
    else:
        record = {"accuracy": test["accuracy"], "binarized_accuracy": test["binarized_accuracy"],
                  "n_examples": test.get("n_images")}
    record = {k: v for k, v in record.items() if v is not None}
    record["measured_by"] = "the trainer's final evaluation of the checkpoint on the test split"
    record["command"] = meta.get("command", "")
    return {f"{stem}/test": record}


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path, *, model_id: str | None = None,
                      export_command: str = "") -> dict:
    """Export a `chainrule train recogniser` checkpoint (audio or image) to `out_dir`; return the card."""
    from engines.training.loop import load_checkpoint
    from engines.training.train_recogniser import build

    model, ck = load_checkpoint(ckpt_path, build)
    task = (ck.get("config") or {}).get("task")
    if task == "audio":
        return export_audio(model, out_dir, ck, model_id=model_id, export_command=export_command)
    if task == "image":
        return export_image(model, out_dir, ck, model_id=model_id, export_command=export_command)
    raise InputError(f"{ckpt_path}: not a recogniser checkpoint (config task {task!r})")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m engines.training.export_recogniser",
                                description="Export a recogniser checkpoint (audio or image) to ONNX + card.json")
    p.add_argument("--ckpt", required=True, help="training checkpoint (ckpt.pt)")
    p.add_argument("--out", required=True, help="model folder to write model.onnx and card.json into")
    p.add_argument("--id", default=None, help="model id (default: the folder name)")
    args = p.parse_args(argv)
    command = shlex.join(["python", "-m", "engines.training.export_recogniser", *argv])
    card = export_checkpoint(args.ckpt, args.out, model_id=args.id, export_command=command)
    print(json.dumps({k: card[k] for k in ("id", "modality", "parameters", "metrics", "export_check")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
