"""`chainrule generate text`, `score --text`, `eval` and `bench text`."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from engines import atomic
from engines.cli import config_from_args
from engines.cli_common import (check_count, check_out_path, eval_size, print_model_and_seed, print_notes,
                                refuse_empty_split, sample_paths)
from engines.errors import InputError, stopped_note
from engines.generation import resolve_seed
from engines.limits import check_regular_file
from engines.progress import Progress
from engines.registry import ModelInfo
from engines.text.model import load_text_model
from engines.text.session import beam_generate, plan_prompt, score_text, stream_tokens, trim_at_stop


def _write_sample(path: str | None, sample: dict[str, Any], record: dict[str, Any]) -> None:
    if path is None:
        return
    if path.endswith(".json"):
        atomic.write_json(path, {**record, "sample": sample})
    else:
        atomic.write_text(path, sample["text"])


def generate(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    check_out_path(getattr(args, "out", None))  # before any work: nothing generated is lost
    model = load_text_model(info)
    config = config_from_args(args, model.decoding_defaults)
    check_count(args.count, config.seed)
    if config.strategy == "beam" and args.count != 1:
        raise InputError(f"--count does not apply to --strategy beam: beam search returns --num-return-sequences "
                         f"hypotheses (at most --num-beams, {config.num_beams}); leave --count out")
    plan = plan_prompt(model, args.prompt, args.max_new_tokens)
    print_notes(plan.notes)
    seed = resolve_seed(config)
    settings = {**config.to_dict(), "seed": seed, "max_new_tokens": args.max_new_tokens, "prompt": args.prompt, "stop": args.stop}
    record = {"model": info.id, "seed": seed, "settings": settings, "notes": plan.notes}  # every sample file's header
    samples: list[dict[str, Any]] = []
    if config.strategy == "beam":
        def beam_sample(beam, cut_short: bool = False) -> dict[str, Any]:
            text, stop = trim_at_stop(beam.text, args.stop)
            return {
                "text": text, "tokens": [model.tokenizer.decode([t]) for t in beam.token_ids], "token_ids": beam.token_ids,
                "logprobs": beam.token_logprobs, "total_logprob": beam.total_logprob, "n": len(beam.token_ids),
                "beam_score": beam.score, "stopped_by": stop or ("interrupted" if cut_short else None),
            }

        try:
            beams = beam_generate(model, plan.ids, config, args.max_new_tokens)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: keep the best hypotheses so far, then stop
            kept = getattr(exc, "beam_results", [])
            paths = sample_paths(args.out, len(kept))
            for path, beam in zip(paths, kept):
                sample = {**beam_sample(beam, cut_short=not beam.finished), "path": path}
                _write_sample(path, sample, record)
                if path is None:  # nothing on disk: the text on stdout is what the user keeps
                    print(sample["text"])
            steps = getattr(exc, "beam_steps", 0)
            if kept:
                what = (f"the {len(kept)} best hypotheses so far" if len(kept) > 1 else "the best hypothesis so far")
                ended = sum(b.finished for b in kept)
                what += f" ({ended} ended by end-of-text)" if ended else " (cut short)"
                where = f"wrote {what} to {', '.join(str(p) for p in paths)}" if args.out is not None else f"printed {what}"
            else:
                where = "nothing was kept (the search had not taken its first step)"
            stopped_note(exc, f"after {steps} of at most {args.max_new_tokens} beam search steps: {where}")
            raise
        samples = [beam_sample(beam) for beam in beams]
    else:
        paths = sample_paths(args.out, args.count)
        events: list = []

        def sample_of(i: int, stop_reason: str | None = None) -> dict[str, Any]:
            ids = [e.token_id for e in events]
            text, stop = trim_at_stop(model.tokenizer.decode(ids), args.stop)
            lps = [e.logprob for e in events]
            return {
                "text": text, "tokens": [e.text for e in events], "token_ids": ids, "logprobs": lps,
                "total_logprob": float(sum(lps)), "n": len(ids), "seed": seed + i, "stopped_by": stop_reason or stop,
                "window_slides": events[-1].window_slides if events else 0, "path": paths[i],
            }

        try:
            for i in range(args.count):
                # sample i uses seed + i, so each sample is reproducible on its own (CLI and studio)
                events = []
                for ev in stream_tokens(model, plan.ids, config, args.max_new_tokens, seed=seed + i,
                                        stop_strings=args.stop, n_alternatives=0):
                    events.append(ev)
                samples.append(sample_of(i))
                # written as soon as it is done: an interrupt later loses none of the finished samples
                _write_sample(paths[i], samples[-1], record)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: keep the sample being made too, then stop
            done = len(samples)
            if events and done < args.count:
                samples.append(sample_of(done, "interrupted"))
                _write_sample(paths[done], samples[-1], record)
            if args.out is None:  # nothing on disk: the text on stdout is what the user keeps
                for s in samples:
                    print(s["text"])
            where = (f"wrote what was generated so far to {', '.join(str(s['path']) for s in samples)}"
                     if args.out is not None and samples else "printed what was generated so far" if samples
                     else "nothing was generated yet")
            stopped_note(exc, f"after {done} of {args.count} samples: {where}")
            raise
        return {**record, "samples": samples}
    for path, sample in zip(sample_paths(args.out, len(samples)), samples):
        sample["path"] = path
        _write_sample(path, sample, record)
    return {**record, "samples": samples}


def score(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    if args.text is None:
        raise InputError(f"{info.id} is a text model: score it with --text")
    model = load_text_model(info, threads=None)
    r = score_text(model, args.text, args.prompt or "")
    return {
        "model": info.id, "total_logprob": r.total_logprob, "n": len(r.token_ids), "bits_per_dim": r.bits_per_char,
        "bits_per_char": r.bits_per_char, "nats_per_token": r.nats_per_token, "perplexity": r.perplexity,
        "per_element": [{"token": t, "id": i, "logprob": float(lp)} for t, i, lp in zip(r.token_texts, r.token_ids, r.logprobs)],
    }


def read_split(path: str, split: str) -> list[str]:
    """The documents of a split. A text file: train = first 90% of characters, val = test =
    the last 10%. A folder of books (`*.txt`): each book cleaned and cut at the paragraph break
    nearest 90% (as `chainrule train gpt --tokenizer bpe` splits them)."""
    from engines.text.corpus import read_documents

    p = Path(path)
    try:
        if p.is_dir():
            docs = read_documents(p)
            return [d.train_text if split == "train" else d.val_text for d in docs]
        if p.exists():  # a FIFO would block and /dev/zero never end: refused before opening (missing: below)
            check_regular_file(p, "data file")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    cut = int(len(text) * 0.9)
    return [text[:cut] if split == "train" else text[cut:]]


def evaluate(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    """Average NLL over the split, through the same KV-cache path as generation.

    Each document is scored from the document-start token in examples of 8 context windows
    (the window slides inside an example, so every token sees at least half a window of
    context after the first). `--limit N` keeps the first N examples, in order.
    """
    from engines.text.decoder import score_tokens

    model = load_text_model(info, threads=None)
    chunk = model.context_length * 8
    examples = []
    for doc in read_split(args.data, args.split):
        try:
            ids = model.tokenizer.encode(doc)
        except InputError:  # its message quotes the characters: from a file, only where they are is said
            alphabet = getattr(model.tokenizer, "index", None)
            first = next((i for i, c in enumerate(doc) if c not in alphabet), None) if alphabet is not None else None
            where = f" (the first is character {first + 1} of the split)" if first is not None else ""
            raise InputError(f"{args.data}: the {args.split} split holds characters that {info.id} cannot encode"
                             f"{where}; remove or replace them") from None
        examples += [ids[i:i + chunk] for i in range(0, len(ids), chunk)]
    refuse_empty_split(len(examples), args)  # text says "empty" before it looks at --limit
    examples = examples[:eval_size(len(examples), args)]
    total, n_tok, n_chars = 0.0, 0, 0
    progress = Progress(len(examples), "eval")
    for ex in examples:
        total += float(score_tokens(model.decoder, [model.tokenizer.start_id], ex).sum())
        n_tok += len(ex)
        n_chars += len(model.tokenizer.decode(ex))
        progress.advance()
    progress.close()
    nats_tok = -total / n_tok
    return {
        "model": info.id, "split": args.split, "nats_per_element": nats_tok, "nats_per_example": -total / len(examples),
        "bits_per_dim": -total / math.log(2) / n_chars, "bits_per_char": -total / math.log(2) / n_chars,
        "nats_per_char": -total / n_chars, "perplexity": math.exp(nats_tok), "n_examples": len(examples),
        "n_tokens": n_tok, "n_chars": n_chars, "example_tokens": chunk,
    }


def print_result(command: str, result: dict[str, Any]) -> None:
    if command == "generate":
        for i, s in enumerate(result["samples"]):
            if len(result["samples"]) > 1:
                print(f"--- sample {i + 1}: log p = {s['total_logprob']:.2f} nats over {s['n']} tokens")
            print(s["text"])
        print_model_and_seed(result)
    elif command == "score":
        print(f"total log p = {result['total_logprob']:.3f} nats over {result['n']} tokens; "
              f"{result['bits_per_char']:.3f} bits/char; perplexity {result['perplexity']:.2f}")
    else:
        print(f"{result['split']}: {result['nats_per_element']:.4f} nats/token, {result['bits_per_dim']:.4f} bits/char, "
              f"perplexity {result['perplexity']:.3f} over {result['n_tokens']:,} tokens ({result['n_examples']} examples)")


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from engines.text.bench import run_text_bench

    return run_text_bench(args.models_dir)
