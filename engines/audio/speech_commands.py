"""`chainrule generate audio`, `score --audio` and `eval` for speech models (mel prior + vocoder).

`engines.audio.commands` hands a model whose card says ``"family": "speech"`` to these. What
differs from a WaveNet: the prior decides the length (no --seconds), --frame-temperature sets
the prior's sampling, --resynth re-speaks a recording (voice conversion with --speaker), and
every result carries both levels' log-likelihoods. `eval --task` measures three things:

* ``likelihood`` (default): the vocoder's bits/sample given each clip's true frames and speaker,
  and the prior's nats/frame of the true frames given the true digit and speaker;
* ``generation``: for every digit and speaker, --seeds clips at the card's default settings,
  judged by the recogniser (`engines.recognise`): digit and speaker accuracy;
* ``resynthesis``: every clip of the split re-spoken from its own frames in its own voice, judged.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import numpy as np

from engines.audio import mulaw
from engines.audio.data import load_fsdd
from engines.audio.scoring import SURPRISE_WINDOW, smooth_surprise
from engines.audio.speech import (SpeechModel, frames_of_audio, load_speech_model, resynthesize, run_to_end,
                                  score_prior, score_vocoder, speak)
from engines.cli_common import eval_indices, eval_subset_label, print_notes, sample_paths
from engines.errors import InputError, stopped_note
from engines.progress import Progress
from engines.registry import ModelInfo

LN2 = math.log(2)
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
EVAL_TASKS = ("likelihood", "generation", "resynthesis")


def _judge():
    from engines.recognise import default_judge

    return default_judge("audio")


def _verdict_dict(judge, samples: np.ndarray, rate: int) -> dict[str, Any] | None:
    if judge is None or len(samples) == 0:
        return None
    v = judge.judge(samples, rate)
    return {"digit": v.label, "digit_name": v.name, "digit_probability": v.probability,
            "speaker": v.speaker, "speaker_probability": v.speaker_probability}


def refuse_flags(args: argparse.Namespace, info: ModelInfo) -> None:
    """`generate audio` flags a speech model does not take, refused in the flags' own words."""
    if getattr(args, "seconds", None) is not None:
        raise InputError(f"--seconds does not apply to {info.id}: its prior decides where the utterance ends")
    resynth, prompt_path = getattr(args, "resynth", None), getattr(args, "prompt", None)
    if resynth and prompt_path:
        raise InputError("--resynth and --prompt do not go together: re-speak a recording, or continue it")
    if resynth and getattr(args, "frame_temperature", None) is not None:
        raise InputError("--frame-temperature does not apply to --resynth: the recording's own frames are used, "
                         "none are sampled")
    if resynth and getattr(args, "digit", None) is not None:
        raise InputError("--digit does not apply to --resynth: the recording's own frames say what is spoken")


def _sample_result(finished, i: int, path: str | None, judge) -> dict[str, Any]:
    """What the CLI reports of utterance i of a finished run."""
    request, rate = finished.request, finished.sample_rate
    resynth = request.resynth is not None
    new = finished.samples[i]
    audio = finished.audio(i, with_prompt=not resynth)
    n = len(new)
    vocoder = finished.total_logprob(i)
    prior = finished.prior_logprobs[i]
    n_prior_frames = finished.n_prior_frames[i]
    return {
        "path": path, "row": i, "seed": request.seed + i, "frames": int(finished.frames[i].shape[1]),
        "seconds": len(audio) / rate, "new_samples": n,
        "prior_logprob": None if resynth else prior,
        "prior_nats_per_frame": None if resynth else prior / max(1, n_prior_frames),
        "vocoder_logprob": vocoder, "vocoder_bits_per_sample": -vocoder / LN2 / max(1, n),
        "heard_as": _verdict_dict(judge, audio, rate),
    }


def generate_from_request(request, info: ModelInfo, out: str | None) -> dict[str, Any]:
    """Run a speech request (`engines.audio.request.run`: utterance i with seed + i) and write each
    utterance to --out (_1, _2 ... for several) carrying its own request."""
    from engines.audio.request import Chunk, Finished, run, write_sample

    model = load_speech_model(info)
    paths = sample_paths(out, request.count)
    events = run(request, info, model=model)
    started = next(events)
    print_notes(started.notes)
    t0 = time.perf_counter()
    resynth = request.resynth is not None
    rows: dict[int, list[np.ndarray]] = {}
    finished = None
    try:
        for ev in events:
            if isinstance(ev, Chunk):
                rows.setdefault(ev.row, []).append(ev.samples[0])
            elif isinstance(ev, Finished):
                finished = ev
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: keep the audio spoken so far, then stop as interrupted
        written = []
        for i, parts in sorted(rows.items()):
            if paths[i] is None:
                continue
            part = np.concatenate(parts)
            whole = part if started.prompt is None or resynth else np.concatenate([started.prompt, part])
            write_sample(paths[i], whole, started.sample_rate, request.for_sample(i), info, {"complete": False})
            written.append(f"{len(part) / started.sample_rate:.2f} s of audio to {paths[i]}")
        if written:
            # said by the CLI in its one "interrupted" line (stderr holds one line, not two)
            stopped_note(exc, f"after {'; '.join(written)}: wrote it")
        raise
    elapsed = time.perf_counter() - t0
    judge = _judge()
    samples = []
    for i, path in enumerate(paths):
        entry = _sample_result(finished, i, path, judge)
        if path is not None:
            write_sample(path, finished.audio(i, with_prompt=not resynth), finished.sample_rate,
                         request.for_sample(i), info,
                         {k: entry[k] for k in ("prior_logprob", "vocoder_logprob", "vocoder_bits_per_sample",
                                                "seconds")})
        samples.append(entry)
    n_new = sum(s["new_samples"] for s in samples)
    settings = {"mode": request.mode, "digit": request.digit, "speaker": request.speaker, "seed": request.seed,
                "frame_temperature": request.frame_temperature, "temperature": request.temperature,
                "source": (request.resynth or request.prompt).path if (request.resynth or request.prompt) else None,
                "sample_rate": finished.sample_rate, "count": request.count}
    return {"model": info.id, "seed": request.seed, "settings": settings, "notes": list(started.notes),
            **samples[0], "samples": samples, "samples_per_second": n_new / elapsed if elapsed > 0 else None,
            "request": request.to_json()}


def score(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    """Both levels on a recording: ln p(its frames | digit, speaker) and ln p(its audio | its frames, speaker)."""
    from engines.audio.wav import read_audio

    model = load_speech_model(info, threads=None)
    model.digit_id(args.digit)
    sid = model.speaker_id(args.speaker)
    loaded = read_audio(args.audio, sample_rate=model.sample_rate)
    print_notes(loaded.notes)
    frames = frames_of_audio(loaded.samples, model.mel)
    prior = score_prior(model, frames, digit=args.digit, speaker=args.speaker)
    lp = score_vocoder(model, mulaw.encode(loaded.samples), frames, sid)
    prior_total = float(sum(f.logprob + f.stop_logprob for f in prior))
    return {
        "model": info.id, "audio": args.audio, "digit": args.digit, "speaker": args.speaker,
        "frames": int(frames.shape[1]), "prior_logprob": prior_total, "prior_nats_per_frame": prior_total / len(prior),
        "total_logprob": float(lp.sum()), "n": len(lp), "bits_per_sample": -float(lp.sum()) / LN2 / len(lp),
        "bits_per_dim": -float(lp.sum()) / LN2 / len(lp), "seconds": len(lp) / model.sample_rate,
        "notes": list(loaded.notes), "logprobs": [float(v) for v in lp],
        "surprise_bits": [float(v) for v in smooth_surprise(-lp / LN2)], "surprise_window": SURPRISE_WINDOW,
        "frame_logprobs": [f.logprob for f in prior],
    }


def evaluate(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    task = getattr(args, "task", None) or "likelihood"
    if task not in EVAL_TASKS:
        raise InputError(f"--task {task!r}: choose {', '.join(EVAL_TASKS)}")
    model = load_speech_model(info, threads=None)
    if task == "generation":
        return evaluate_generation(model, seeds=getattr(args, "seeds", None) or 3)
    data = load_fsdd(args.data, args.split)
    if data.sample_rate != model.sample_rate:
        raise InputError(f"{args.data} is sampled at {data.sample_rate} Hz; {info.id} speaks {model.sample_rate} Hz")
    n_available = len(data)
    data = data.take(eval_indices(n_available, args))  # all, the first --limit clips, or --sample's draw
    n = len(data)
    subset = eval_subset_label(n, n_available, args)
    progress = Progress(n, "eval")
    if task == "resynthesis":
        return {**evaluate_resynthesis(model, data, n, args, progress), "subset": subset}
    v_total = p_total = 0.0
    n_samples = n_frames = 0
    for i in range(n):
        clip = data.clips[i]
        samples = mulaw.decode(clip)
        frames = frames_of_audio(samples, model.mel)
        spk = data.speakers[int(data.speaker_ids[i])]
        v_total -= float(score_vocoder(model, clip, frames, model.speaker_id(spk)).sum())
        p_total -= sum(f.logprob + f.stop_logprob for f in score_prior(model, frames, digit=int(data.digits[i]),
                                                                        speaker=spk))
        n_samples += len(clip)
        n_frames += frames.shape[1]
        progress.advance(1)
    progress.close()
    return {"model": model.id, "data": args.data, "split": args.split, "task": "likelihood", "n_examples": n,
            "vocoder_bits_per_sample": v_total / n_samples / LN2, "vocoder_nats_per_sample": v_total / n_samples,
            "n_samples": n_samples, "prior_nats_per_frame": p_total / n_frames, "n_frames": n_frames,
            "bits_per_sample": v_total / n_samples / LN2, "nats_per_element": v_total / n_samples,
            "conditioning": "vocoder: each clip's own frames and speaker; prior: its true digit and speaker",
            "subset": subset}


def _require_judge():
    judge = _judge()
    if judge is None:
        raise InputError("no audio recogniser is installed (fsdd-recogniser): it judges what the samples say")
    return judge


def evaluate_generation(model: SpeechModel, seeds: int) -> dict[str, Any]:
    """Every digit x every speaker x `seeds` seeds at the card's defaults, judged by the recogniser."""
    if not 1 <= seeds <= 20:
        raise InputError(f"--seeds {seeds}: choose 1..20")
    judge = _require_judge()
    defaults = dict(model.decoding_defaults)
    ft, t = float(defaults.get("frame_temperature", 0.6)), float(defaults.get("temperature", 1.0))
    digits, speakers = range(model.prior.n_digits), model.speakers
    progress = Progress(len(digits) * len(speakers) * seeds, "generate")
    dig_ok = spk_ok = 0
    per_digit = {d: 0 for d in digits}
    seconds, t0, n_samples = [], time.perf_counter(), 0
    for d in digits:
        for s in speakers:
            for seed in range(seeds):
                r = run_to_end(model, speak(model, seed=seed, digit=d, speaker=s, frame_temperature=ft, temperature=t))
                v = judge.judge(r.samples, model.sample_rate)
                dig_ok += int(v.label == d)
                per_digit[d] += int(v.label == d)
                spk_ok += int(v.speaker == s)
                seconds.append(len(r.samples) / model.sample_rate)
                n_samples += len(r.samples)
                progress.advance(1)
    progress.close()
    n = len(seconds)
    return {"model": model.id, "task": "generation", "n_examples": n, "seeds_per_pair": seeds,
            "digit_accuracy": dig_ok / n, "speaker_accuracy": spk_ok / n,
            "per_digit_accuracy": {DIGIT_NAMES[d] if d < 10 else str(d): c / (len(speakers) * seeds)
                                   for d, c in per_digit.items()},
            "mean_seconds": float(np.mean(seconds)), "frame_temperature": ft, "temperature": t,
            "samples_per_second": n_samples / (time.perf_counter() - t0),
            "judge": judge.id, "settings": "the card's decoding defaults",
            **{f"digit_accuracy_{DIGIT_NAMES[d]}": c / (len(speakers) * seeds) for d, c in per_digit.items() if d < 10}}


def evaluate_resynthesis(model: SpeechModel, data, n: int, args, progress) -> dict[str, Any]:
    """Each clip re-spoken from its own frames in its own voice (seed 0, the card's temperature), judged;
    the real clips are judged too, as the ceiling."""
    judge = _require_judge()
    t = float(dict(model.decoding_defaults).get("temperature", 1.0))
    dig_ok = spk_ok = real_dig = real_spk = 0
    for i in range(n):
        real = mulaw.decode(data.clips[i])
        spk, d = data.speakers[int(data.speaker_ids[i])], int(data.digits[i])
        _, chunks = resynthesize(model, real, seed=0, speaker=spk, temperature=t)
        out = run_to_end(model, chunks).samples
        v, vr = judge.judge(out, model.sample_rate), judge.judge(real, model.sample_rate)
        dig_ok += int(v.label == d)
        spk_ok += int(v.speaker == spk)
        real_dig += int(vr.label == d)
        real_spk += int(vr.speaker == spk)
        progress.advance(1)
    progress.close()
    return {"model": model.id, "data": args.data, "split": args.split, "task": "resynthesis", "n_examples": n,
            "digit_accuracy": dig_ok / n, "speaker_accuracy": spk_ok / n,
            "real_digit_accuracy": real_dig / n, "real_speaker_accuracy": real_spk / n, "temperature": t,
            "judge": judge.id}


def print_result(command: str, result: dict[str, Any]) -> None:
    if command == "generate":
        several = len(result.get("samples", [])) > 1
        for r in result.get("samples", [result]):
            heard = r.get("heard_as")
            prior = (f"log p(frames) = {r['prior_logprob']:.1f} nats ({r['prior_nats_per_frame']:.2f}/frame), "
                     if r["prior_logprob"] is not None else "")
            head = f"--- {result['settings']['mode']}" + (f" {r['row'] + 1} (seed {r['seed']})" if several else "")
            print(f"{head}: {r['frames']} frames, {r['seconds']:.2f} s; {prior}"
                  f"log p(audio | frames) = {r['vocoder_logprob']:.1f} nats "
                  f"({r['vocoder_bits_per_sample']:.3f} bits/sample)" + (f", saved to {r['path']}" if r["path"] else ""))
            if heard:
                print(f"heard as: {heard['digit_name']} ({heard['digit_probability']:.0%}), "
                      f"{heard['speaker']} ({heard['speaker_probability']:.0%})")
        print(f"\n[model {result['model']}, seed {result['seed']}]", file=sys.stderr)
    elif command == "score":
        print(f"log p(frames | digit, speaker) = {result['prior_logprob']:.2f} nats over {result['frames']} frames "
              f"({result['prior_nats_per_frame']:.3f} nats/frame)")
        print(f"log p(audio | frames) = {result['total_logprob']:.2f} nats over {result['n']} samples "
              f"({result['seconds']:.2f} s); {result['bits_per_sample']:.4f} bits/sample")
    elif result.get("task") == "likelihood":
        print(f"{result['split']}: vocoder {result['vocoder_bits_per_sample']:.4f} bits/sample over "
              f"{result['n_samples']} samples; prior {result['prior_nats_per_frame']:.4f} nats/frame over "
              f"{result['n_frames']} frames ({result['n_examples']} clips)")
    elif result.get("task") == "generation":
        print(f"generation: {result['n_examples']} clips ({result['seeds_per_pair']} seeds x every digit and speaker), "
              f"recognised digit {result['digit_accuracy']:.1%}, speaker {result['speaker_accuracy']:.1%} "
              f"(mean {result['mean_seconds']:.2f} s, {result['samples_per_second']:.0f} samples/s)")
        print("per digit: " + ", ".join(f"{k} {v:.0%}" for k, v in result["per_digit_accuracy"].items()))
    else:
        print(f"resynthesis of {result['split']} ({result['n_examples']} clips): recognised digit "
              f"{result['digit_accuracy']:.1%}, speaker {result['speaker_accuracy']:.1%} "
              f"(the real clips: {result['real_digit_accuracy']:.1%}, {result['real_speaker_accuracy']:.1%})")
