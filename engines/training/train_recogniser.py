"""Train a recogniser (``engines.training.recogniser``): the instrument that judges samples.

Run as::

    chainrule train recogniser --task audio --data fsdd.npz --out DIR      # digit + speaker from log-mel
    chainrule train recogniser --task image --data mnist.npz --out DIR     # MNIST digit

Audio: the FSDD training split (takes 10-49) as log-mel frames of the mu-law clips (what the
vocoder's output is made of). Each batch pads its clips with silence frames (a random amount
before and after, so position and padding carry no information) and augments them: a random
gain (a shift of the log-mel, clamped at the floor), one frequency mask and one time mask
(SpecAugment). The validation split (takes 5-9) picks the best checkpoint by the mean of the
digit and speaker errors.

Image: MNIST train (the first 50,000), each image shifted by up to 2 pixels and, half of the
time, binarized by drawing each pixel as Bernoulli(grey / 255), so the recogniser reads the
binarized models' samples as well as grey ones. Validation: the last 10,000 training images.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engines.audio import mulaw
from engines.audio.data import AudioSplit, load_fsdd
from engines.audio.mel import MelSpec, log_mel
from engines.errors import InputError
from engines.image.data import load_split
from engines.training.cli_args import add_run_arguments, add_schedule_arguments, run_trainer
from engines.training.run_files import start_run
from engines.training.loop import fit, load_checkpoint, load_resume, store_metrics
from engines.training.recogniser import AudioRecogniser, AudioRecogniserConfig, ImageRecogniser, audio_loss

DEFAULTS = dict(task="audio", channels=128, batch_size=32, lr=2e-3, min_lr=2e-5, warmup_iters=100, max_iters=4000,
                grad_clip=1.0, eval_interval=250, seed=1337, time_limit_minutes=20.0, threads=1)


# --- audio -----------------------------------------------------------------------------------

def audio_frames(split: AudioSplit, spec: MelSpec) -> list[np.ndarray]:
    return [log_mel(mulaw.decode(c), spec) for c in split.clips]


def audio_batch(frames: list[np.ndarray], split: AudioSplit, spec: MelSpec, batch: int, rng: np.random.Generator):
    """(mel (B, n_mels, T) padded with silence and augmented, digit (B,), speaker (B,))."""
    which = rng.integers(0, len(frames), size=batch)
    pads = rng.integers(0, 31, size=(batch, 2))
    T = max(frames[i].shape[1] + p.sum() for i, p in zip(which, pads))
    floor = spec.silence_value
    mel = np.full((batch, spec.n_mels, T), floor, dtype=np.float32)
    for b, i in enumerate(which):
        f = np.maximum(frames[i] + rng.uniform(-1.5, 1.5), floor)  # gain: +-6.5 dB
        f0 = int(rng.integers(0, spec.n_mels - 6))
        f = f.copy()
        f[f0:f0 + int(rng.integers(0, 7))] = floor  # frequency mask
        t0 = int(rng.integers(0, f.shape[1]))
        f[:, t0:t0 + int(rng.integers(0, 6))] = floor  # time mask
        mel[b, :, pads[b, 0]:pads[b, 0] + f.shape[1]] = f
    return (torch.from_numpy(mel), torch.from_numpy(split.digits[which]), torch.from_numpy(split.speaker_ids[which]))


@torch.no_grad()
def audio_accuracy(model: AudioRecogniser, frames: list[np.ndarray], split: AudioSplit) -> dict:
    was = model.training
    model.eval()
    dig = spk = 0
    for f, d, s in zip(frames, split.digits, split.speaker_ids):
        dl, sl = model(torch.from_numpy(f)[None])
        dig += int(dl.argmax(1).item() == d)
        spk += int(sl.argmax(1).item() == s)
    model.train(was)
    n = len(frames)
    return {"digit_accuracy": dig / n, "speaker_accuracy": spk / n, "n_clips": n,
            "error": 1.0 - (dig + spk) / (2 * n)}


# --- image -----------------------------------------------------------------------------------

def image_batch(x: np.ndarray, y: np.ndarray, batch: int, rng: np.random.Generator):
    """(images (B, 1, 28, 28) float in [0, 1], shifted, half binarized; labels (B,))."""
    which = rng.integers(0, len(x), size=batch)
    img = x[which].astype(np.float32) / 255.0  # (B, 1, H, W)
    out = np.zeros_like(img)
    H, W = img.shape[2:]
    for b in range(batch):
        dy, dx = rng.integers(-2, 3, size=2)
        out[b, :, max(0, dy):H + min(0, dy), max(0, dx):W + min(0, dx)] = \
            img[b, :, max(0, -dy):H + min(0, -dy), max(0, -dx):W + min(0, -dx)]
    binar = rng.random(batch) < 0.5
    out[binar] = (rng.random(out[binar].shape) < out[binar]).astype(np.float32)
    return torch.from_numpy(out), torch.from_numpy(y[which])


@torch.no_grad()
def image_accuracy(model: ImageRecogniser, x: np.ndarray, y: np.ndarray, binarize_seed: int | None = None) -> float:
    was = model.training
    model.eval()
    img = x.astype(np.float32) / 255.0
    if binarize_seed is not None:
        img = (np.random.default_rng(binarize_seed).random(img.shape) < img).astype(np.float32)
    correct = 0
    for a in range(0, len(img), 1000):
        correct += int((model(torch.from_numpy(img[a:a + 1000])).argmax(1).numpy() == y[a:a + 1000]).sum())
    model.train(was)
    return correct / len(img)


# --- the run ---------------------------------------------------------------------------------

def build(config: dict) -> torch.nn.Module:
    if config.get("task") == "image":
        return ImageRecogniser()
    return AudioRecogniser(AudioRecogniserConfig(**{k: v for k, v in config.items() if k != "task"}))


def train(data_path, out_dir, *, resume=False, command=None, **hp) -> dict:
    hp, out, command = start_run(out_dir, hp, DEFAULTS, command)
    ck = load_resume(out) if resume else None
    torch.manual_seed(hp["seed"])
    if hp["task"] == "audio":
        tr, va = load_fsdd(data_path, "train"), load_fsdd(data_path, "val")
        spec = MelSpec(sample_rate=tr.sample_rate)
        ftr, fva = audio_frames(tr, spec), audio_frames(va, spec)
        allf = np.concatenate(ftr, axis=1).astype(np.float64)
        cfg = AudioRecogniserConfig(n_mels=spec.n_mels, channels=hp["channels"], n_digits=int(tr.digits.max()) + 1,
                                    speakers=list(tr.speakers), mel_mean=allf.mean(1).tolist(),
                                    mel_std=np.maximum(allf.std(1), 1e-3).tolist())
        config = {"task": "audio", **(ck["config"] if ck else cfg.to_dict())}
        config["task"] = "audio"
        meta_data = {"path": str(data_path), "train_clips": len(tr), "val_clips": len(va), "mel": spec.to_dict()}

        def loss_at(it):
            mel, d, s = audio_batch(ftr, tr, spec, hp["batch_size"], np.random.default_rng([hp["seed"], it]))
            return audio_loss(model, mel, d, s)

        def evaluate():
            return audio_accuracy(model, fva, va)

        def report(it, loss, val, best):
            return ({"epoch": round(it * hp["batch_size"] / len(tr), 2), "train_loss": round(loss, 4),
                     "val_digit_accuracy": round(val["digit_accuracy"], 4),
                     "val_speaker_accuracy": round(val["speaker_accuracy"], 4)},
                    f"loss {loss:.4f}  val digit {val['digit_accuracy']:.3f} speaker {val['speaker_accuracy']:.3f}")
    elif hp["task"] == "image":
        tr, va = load_split(data_path, "train"), load_split(data_path, "val")
        if tr.labels is None or tr.levels != 256:
            raise InputError(f"{data_path}: the image recogniser trains on labelled grey MNIST (mnist.npz)")
        config = {"task": "image", "n_classes": 10}
        meta_data = {"path": str(data_path), "train_images": len(tr), "val_images": len(va)}

        def loss_at(it):
            x, y = image_batch(tr.images, tr.labels, hp["batch_size"], np.random.default_rng([hp["seed"], it]))
            return F.cross_entropy(model(x), y)

        def evaluate():
            acc = image_accuracy(model, va.images, va.labels)
            return {"accuracy": acc, "error": 1.0 - acc}

        def report(it, loss, val, best):
            return ({"epoch": round(it * hp["batch_size"] / len(tr), 2), "train_loss": round(loss, 4),
                     "val_accuracy": round(val["accuracy"], 4)}, f"loss {loss:.4f}  val accuracy {val['accuracy']:.4f}")
    else:
        raise InputError(f"--task {hp['task']!r}: audio or image")
    model = build(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=hp["lr"])
    n_params = sum(p.numel() for p in model.parameters())
    return fit(model=model, optimizer=optimizer, out=out, hp=hp, command=command, resume_ck=ck,
               meta={"config": config, "parameters": n_params, "data": meta_data},
               header=f"data: {meta_data}\nparameters: {n_params:,}", loss_at=loss_at, evaluate=evaluate,
               best_by="error", report=report, best_text=lambda v: f"error {v:.4f}",
               final_eval=lambda path: final_evaluation(path, data_path, out / "log.jsonl"))


def final_evaluation(ckpt_path: Path, data_path, log_path: Path | None = None) -> dict:
    """Test-split accuracy of the best checkpoint, stored in it as `metrics`."""
    model, ck = load_checkpoint(ckpt_path, build)
    model.eval()
    t0 = time.time()
    if ck["config"]["task"] == "audio":
        te = load_fsdd(data_path, "test")
        r = audio_accuracy(model, audio_frames(te, MelSpec(**ck["data"]["mel"])), te)
        metrics = {"test": {k: round(v, 5) if isinstance(v, float) else v for k, v in r.items() if k != "error"}}
        print(f"test: digit accuracy {r['digit_accuracy']:.4f}, speaker accuracy {r['speaker_accuracy']:.4f} "
              f"over {r['n_clips']} clips", flush=True)
    else:
        te = load_split(data_path, "test")
        grey, binar = image_accuracy(model, te.images, te.labels), image_accuracy(model, te.images, te.labels, 0)
        metrics = {"test": {"accuracy": round(grey, 5), "binarized_accuracy": round(binar, 5), "n_images": len(te)}}
        print(f"test: accuracy {grey:.4f} (grey), {binar:.4f} (binarized) over {len(te)} images", flush=True)
    return store_metrics(ck, ckpt_path, metrics, log_path, t0)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = DEFAULTS
    p.add_argument("--task", choices=("audio", "image"), default=d["task"])
    p.add_argument("--data", required=True, help="fsdd.npz (audio) or mnist.npz (image)")
    p.add_argument("--out", required=True, help="output dir: ckpt.pt, last.pt, log.jsonl")
    p.add_argument("--channels", type=int, default=d["channels"], help="audio: convolution width")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    add_schedule_arguments(p, d)
    p.add_argument("--grad-clip", type=float, default=d["grad_clip"])
    p.add_argument("--eval-interval", type=int, default=d["eval_interval"])
    p.add_argument("--no-final-eval", dest="final_eval", action="store_false")
    add_run_arguments(p, d)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_trainer("recogniser", __doc__, add_arguments, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
