"""`chainrule generate audio`, `score --audio`, `eval --data fsdd.npz` and `bench audio` for WaveNet models."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from engines.audio.data import load_fsdd
from engines.audio.generate import MAX_BATCH
from engines.audio.model import load_audio_model
from engines.audio.request import (DEFAULT_SECONDS, AudioRequest, Chunk, Finished, card_decoding_defaults,
                                   card_frame_temperature, recording_ref, run, write_sample)
from engines.audio.scoring import SURPRISE_WINDOW, score_audio, score_clips
from engines.cli import config_from_args
from engines.cli_common import (check_count, check_out_path, eval_indices, eval_subset_label, print_model_and_seed,
                                print_notes, refuse_overwriting_inputs, sample_paths)
from engines.errors import InputError, stopped_note
from engines.progress import Progress
from engines.registry import ModelInfo

LN2 = math.log(2)


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


def check_audio_out(out: str | None, count: int, inputs: dict[str, str | None]) -> None:
    """Refuse a bad --out before any work: its suffix, its folder, or one that would replace an input."""
    from engines.audio.wav import WRITE_FORMATS

    if out is not None and Path(out).suffix.lower() not in WRITE_FORMATS:
        raise InputError(f"--out {out}: audio is written as {' or '.join(WRITE_FORMATS)} (choose one of those suffixes)")
    check_out_path(out)  # before any work: nothing generated is lost to a bad --out
    refuse_overwriting_inputs(out, count, inputs)


def request_from_args(args: argparse.Namespace, info: ModelInfo) -> AudioRequest:
    """The AudioRequest that `chainrule generate audio` flags ask for (card defaults filled in, so the
    request says every setting it runs with; the seed stays None until the run resolves it)."""
    speech = _speech(info) is not None
    if speech:
        from engines.audio.speech_commands import refuse_flags

        refuse_flags(args, info)
    else:
        _refuse_speech_flags(args, info)
    count = args.count
    check_count(count, getattr(args, "seed", None), cap=MAX_BATCH)
    config = config_from_args(args, card_decoding_defaults(info.card))
    prompt_path, resynth_path = getattr(args, "prompt", None), getattr(args, "resynth", None)
    seconds = getattr(args, "seconds", None)
    if seconds is None and not speech:
        seconds = DEFAULT_SECONDS
    ft = getattr(args, "frame_temperature", None)
    if speech and ft is None and resynth_path is None:
        ft = card_frame_temperature(info.card)
    prompt = recording_ref(prompt_path, "--prompt") if prompt_path else None
    resynth = recording_ref(resynth_path, "--resynth") if resynth_path else None
    return AudioRequest(model=info.id, decoding=config, count=count, digit=getattr(args, "digit", None),
                        speaker=getattr(args, "speaker", None), seconds=seconds, frame_temperature=ft,
                        prompt=prompt, resynth=resynth)


def generate(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    """`chainrule generate audio`: flags -> AudioRequest -> `generate_from_request`."""
    check_audio_out(args.out, args.count, {"prompt": getattr(args, "prompt", None),
                                           "resynth": getattr(args, "resynth", None)})
    return generate_from_request(request_from_args(args, info), info, args.out)


def generate_from_request(request: AudioRequest, info: ModelInfo, out: str | None) -> dict[str, Any]:
    """Run `request` (`engines.audio.request.run`), write each sample to --out (_1, _2 ... for
    several) carrying its own request (`for_sample(i)`), and return the result dict."""
    speech = _speech(info)
    inputs = {"prompt": request.prompt.path if request.prompt else None,
              "resynth": request.resynth.path if request.resynth else None}
    check_audio_out(out, request.count, inputs)
    request = request.resolved()
    if speech is not None:
        return {**speech.generate_from_request(request, info, out), "family": "speech"}
    paths = sample_paths(out, request.count)
    events = run(request, info)  # checks the request against the model, reads the prompt
    started = next(events)
    print_notes(started.notes)
    if out is None:
        print("chainrule: warning: no --out given: the audio is not saved (only its numbers are printed); "
              "pass --out FILE.wav to keep it", file=sys.stderr)
    rate = started.sample_rate
    progress = Progress(started.n_samples, "generate")
    parts: list[np.ndarray] = []
    finished = None
    try:
        for ev in events:
            if isinstance(ev, Chunk):
                parts.append(ev.samples)
                progress.advance(ev.samples.shape[1])
            elif isinstance(ev, Finished):
                finished = ev
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: keep what was generated, then stop as interrupted
        progress.close()
        written = []
        if parts and paths[0] is not None:
            samples = np.concatenate(parts, axis=1)
            for i, path in enumerate(paths):
                write_sample(path, samples[i], rate, request.for_sample(i), info,
                             {"complete": False, "samples": int(samples.shape[1])})
                written.append(path)
        done = sum(p.shape[1] for p in parts)
        # said by the CLI in its one "interrupted" line (stderr holds one line, not two)
        if written:
            stopped_note(exc, f"after {done / rate:.2f} s of {started.n_samples / rate:g} s: "
                              f"wrote what was generated so far to {', '.join(written)}")
        elif out is not None:
            stopped_note(exc, "before the first chunk was generated: nothing written")
        raise
    progress.close()
    settings = {"temperature": request.temperature, "strategy": request.decoding.strategy, "seed": request.seed,
                "digit": request.digit, "speaker": request.speaker, "seconds": request.seconds,
                "prompt": inputs["prompt"], "count": request.count, "sample_rate": rate}
    out_samples = []
    for i, path in enumerate(paths):
        samples, total = finished.samples[i], finished.total_logprob(i)
        n = int(len(samples))
        entry = {"path": path, "total_logprob": total, "n": n, "bits_per_sample": -total / LN2 / n,
                 "seconds": n / rate, "row": i, "seed": request.seed + i}
        if path is not None:
            write_sample(path, samples, rate, request.for_sample(i), info,
                         {"total_logprob": total, "bits_per_sample": entry["bits_per_sample"], "seconds": n / rate})
        out_samples.append(entry)
    return {"model": info.id, "seed": request.seed, "settings": settings, "notes": list(started.notes),
            "prompt_samples": 0 if finished.prompt is None else int(len(finished.prompt)), "samples": out_samples,
            "request": request.to_json()}


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
    n_available = len(data)
    data = data.take(eval_indices(n_available, args))  # all, the first --limit clips, or --sample's draw
    n = len(data)
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
        "conditioning": "true digit and speaker", "subset": eval_subset_label(n, n_available, args),
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
