"""`chainrule generate audio`, `score --audio`, `eval --data fsdd.npz` and `bench audio` for WaveNet models."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from engines.audio.data import load_fsdd
from engines.audio.generate import MAX_BATCH, generate_audio_chunks
from engines.audio.model import AudioModel, load_audio_model
from engines.audio.scoring import SURPRISE_WINDOW, score_audio, score_clips
from engines.cli import config_from_args
from engines.cli_common import (check_count, check_out_path, eval_size, print_model_and_seed, print_notes,
                                refuse_overwriting_inputs, sample_paths)
from engines.decoding.config import DecodingConfig
from engines.errors import InputError, stopped_note
from engines.generation import resolve_seed
from engines.progress import Progress
from engines.registry import ModelInfo

LN2 = math.log(2)
# Decoding settings a WaveNet sampler does not use: refused rather than silently ignored.
_UNUSED = {"top_k": ("--top-k", 0), "top_p": ("--top-p", 1.0), "min_p": ("--min-p", 0.0),
           "typical_p": ("--typical-p", 1.0), "repetition_penalty": ("--repetition-penalty", 1.0),
           "no_repeat_ngram": ("--no-repeat-ngram", 0)}


def audio_temperature(config: DecodingConfig) -> float:
    """The one decoding value audio uses; greedy means temperature 0."""
    if config.strategy == "beam":
        raise InputError("beam search is not available for audio: use --strategy sample (or greedy)")
    for name, (flag, off) in _UNUSED.items():
        if getattr(config, name) != off:
            raise InputError(f"{flag} is not used by audio models: a WaveNet samples with --temperature only")
    return 0.0 if config.strategy == "greedy" else float(config.temperature)


def _read_prompt(path: str, model: AudioModel) -> tuple[np.ndarray, list[str]]:
    from engines.audio.wav import read_audio

    loaded = read_audio(path, sample_rate=model.sample_rate)
    return loaded.samples, list(loaded.notes)


def _write_partial(paths: list[str | None], parts: list[np.ndarray], sample_rate: int) -> list[str]:
    """On Ctrl-C: write the chunks generated so far (each row to its --out path); the paths written."""
    from engines.audio.wav import write_audio

    if not parts or paths[0] is None:
        return []
    samples = np.concatenate(parts, axis=1)
    written = []
    for i, path in enumerate(paths):
        write_audio(path, samples[i], sample_rate)
        written.append(path)
    return written


def _speech(info: ModelInfo):
    """The speech commands module when `info` is a speech (prior + vocoder) model, else None."""
    from engines.audio.speech import is_speech

    if not is_speech(info):
        return None
    from engines.audio import speech_commands

    return speech_commands


def _refuse_speech_flags(args: argparse.Namespace, info: ModelInfo) -> None:
    for name, flag in (("frame_temperature", "--frame-temperature"), ("resynth", "--resynth"), ("task", "--task"),
                       ("seeds", "--seeds")):
        if name == "task" and getattr(args, name, None) == "likelihood":
            continue
        if getattr(args, name, None) is not None:
            raise InputError(f"{flag} does not apply to {info.id}, a WaveNet: it is for speech models "
                             "(a mel prior + a vocoder, e.g. fsdd-speech)")


def generate(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    from engines.audio.wav import WRITE_FORMATS, write_audio

    speech = _speech(info)
    if speech is not None:
        return {**speech.generate(args, info), "family": "speech"}
    _refuse_speech_flags(args, info)
    if args.seconds is None:
        args.seconds = 1.0

    count = args.count
    check_count(count, cap=MAX_BATCH)  # the samples are generated together, as one batch
    if args.out is not None and Path(args.out).suffix.lower() not in WRITE_FORMATS:
        raise InputError(f"--out {args.out}: audio is written as {' or '.join(WRITE_FORMATS)} (choose one of those suffixes)")
    check_out_path(args.out)  # before any work: nothing generated is lost to a bad --out
    model = load_audio_model(info)
    config = config_from_args(args, model.decoding_defaults)
    temperature = audio_temperature(config)
    digit, speaker = getattr(args, "digit", None), getattr(args, "speaker", None)
    paths = sample_paths(args.out, count)
    prompt_path = getattr(args, "prompt", None)
    prompt, notes = (None, [])
    if prompt_path:
        refuse_overwriting_inputs(args.out, count, {"prompt": prompt_path})
        prompt, notes = _read_prompt(prompt_path, model)
    print_notes(notes)
    seed = resolve_seed(config)
    chunks = generate_audio_chunks(model, seconds=args.seconds, temperature=temperature, seed=seed, digit=digit,
                                   speaker=speaker, batch=count, prompt=prompt)
    if args.out is None:
        print("chainrule: warning: no --out given: the audio is not saved (only its numbers are printed); "
              "pass --out FILE.wav to keep it", file=sys.stderr)
    n_total = int(round(args.seconds * model.sample_rate))
    progress = Progress(n_total, "generate")
    parts, lps = [], []
    try:
        for chunk in chunks:
            parts.append(chunk.samples)
            lps.append(chunk.logprobs)
            progress.advance(chunk.samples.shape[1])
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: keep what was generated, then stop as interrupted
        progress.close()
        written = _write_partial(paths, parts, model.sample_rate)
        done = sum(p.shape[1] for p in parts)
        # said by the CLI in its one "interrupted" line (stderr holds one line, not two)
        if written:
            stopped_note(exc, f"after {done / model.sample_rate:.2f} s of {args.seconds:g} s: "
                              f"wrote what was generated so far to {', '.join(written)}")
        elif args.out is not None:
            stopped_note(exc, "before the first chunk was generated: nothing written")
        raise
    progress.close()
    samples, logprobs = np.concatenate(parts, axis=1), np.concatenate(lps, axis=1).astype(np.float64)
    settings = {"temperature": temperature, "strategy": config.strategy, "seed": seed, "digit": digit,
                "speaker": speaker, "seconds": args.seconds, "prompt": prompt_path, "count": count,
                "sample_rate": model.sample_rate}
    out_samples = []
    for i, path in enumerate(paths):
        if path is not None:
            write_audio(path, samples[i], model.sample_rate)
        total = float(logprobs[i].sum())
        out_samples.append({
            "path": path, "total_logprob": total, "n": int(samples.shape[1]),
            "bits_per_sample": -total / LN2 / samples.shape[1], "seconds": samples.shape[1] / model.sample_rate,
            "row": i,
        })
    return {"model": info.id, "seed": seed, "settings": settings, "notes": notes,
            "prompt_samples": 0 if prompt is None else int(len(prompt)), "samples": out_samples}


def score(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    if getattr(args, "audio", None) is None:
        raise InputError(f"{info.id} is an audio model: score it with --audio WAV")
    speech = _speech(info)
    if speech is not None:
        return {**speech.score(args, info), "family": "speech"}
    from engines.audio.wav import read_audio

    model = load_audio_model(info, threads=None)
    digit, speaker = getattr(args, "digit", None), getattr(args, "speaker", None)
    model.digit_value(digit)
    model.speaker_value(speaker)
    loaded = read_audio(args.audio, sample_rate=model.sample_rate)
    print_notes(loaded.notes)
    s = score_audio(model, loaded.samples, digit=digit, speaker=speaker)
    logprobs = [float(v) for v in s.logprobs]
    return {
        "model": info.id, "audio": args.audio, "digit": digit, "speaker": speaker,
        "total_logprob": s.total_logprob, "n": s.n, "bits_per_dim": s.bits_per_sample,
        "bits_per_sample": s.bits_per_sample, "nats_per_dim": -s.total_logprob / s.n,
        "seconds": s.n / model.sample_rate, "notes": list(loaded.notes),
        "per_element": logprobs,
        "logprobs": logprobs,  # ln p(sample i | samples before it), nats
        # -log2 p per sample, smoothed (the engine's surprise track, as the studio draws it)
        "surprise_bits": [float(v) for v in s.surprise_bits],
        "surprise_window": SURPRISE_WINDOW,
    }


def evaluate(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    """Bits per sample of whole clips of an fsdd.npz split, conditioned on their true digit and speaker
    (the trainer's `evaluate`, through model.onnx)."""
    speech = _speech(info)
    if speech is not None:
        return {**speech.evaluate(args, info), "family": "speech"}
    _refuse_speech_flags(args, info)
    model = load_audio_model(info, threads=None)
    data = load_fsdd(args.data, args.split)
    if data.sample_rate != model.sample_rate:
        raise InputError(f"{args.data} is sampled at {data.sample_rate} Hz; {info.id} models {model.sample_rate} Hz audio")
    n = eval_size(len(data), args)  # the first --limit clips, in order
    speaker_ids = np.array([model.speaker_value(data.speakers[i]) for i in data.speaker_ids[:n]], dtype=np.int64)
    digits = data.digits[:n]
    if digits.min() < 0 or digits.max() >= model.n_digits:
        raise InputError(f"{args.data}: digits outside 0..{model.n_digits - 1}")
    progress = Progress(n, "eval")
    lps = score_clips(model, data.clips[:n], digits, speaker_ids, progress=progress)
    progress.close()
    total = -float(sum(lp.sum() for lp in lps))
    n_samples = int(sum(len(lp) for lp in lps))
    return {
        "model": info.id, "data": args.data, "split": args.split, "nats_per_element": total / n_samples,
        "nats_per_example": total / n, "bits_per_dim": total / n_samples / LN2, "n_examples": n,
        "nats_per_sample": total / n_samples, "bits_per_sample": total / n_samples / LN2, "n_samples": n_samples,
        "conditioning": "true digit and speaker",
    }


def print_result(command: str, result: dict[str, Any]) -> None:
    if result.get("family") == "speech":
        from engines.audio import speech_commands

        speech_commands.print_result(command, result)
        return
    if command == "generate":
        for s in result["samples"]:
            head = f"--- sample {s['row'] + 1}" if len(result["samples"]) > 1 else "---"
            print(f"{head}: {s['seconds']:.2f} s, log p = {s['total_logprob']:.1f} nats "
                  f"({s['bits_per_sample']:.3f} bits/sample)" + (f", saved to {s['path']}" if s["path"] else ""))
        print_model_and_seed(result)
    elif command == "score":
        print(f"log p(audio) = {result['total_logprob']:.2f} nats over {result['n']} samples "
              f"({result['seconds']:.2f} s); {result['bits_per_sample']:.4f} bits/sample")
    else:
        print(f"{result['split']}: {result['bits_per_sample']:.4f} bits/sample ({result['nats_per_sample']:.4f} nats) "
              f"over {result['n_samples']} samples in {result['n_examples']} clips "
              f"(conditioning: {result['conditioning']})")


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from engines.audio.bench import run_audio_bench

    return run_audio_bench(args.models_dir)


def bench_card_parts(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """model id -> its part of a `bench audio` result: the WaveNet's figures, and the speech model's."""
    parts = {result["model"]: {k: v for k, v in result.items() if k != "speech"}}
    if isinstance(result.get("speech"), dict):
        parts[result["speech"]["model"]] = result["speech"]
    return parts
