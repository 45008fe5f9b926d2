"""`chainrule generate text`, `score --text`, `eval` and `bench text`."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from engines import atomic
from engines.cli import config_from_args
from engines.cli_common import (check_count, check_out_path, eval_indices, eval_subset_label, print_model_and_seed,
                                print_notes, refuse_empty_split, sample_paths)
from engines.errors import InputError, stopped_note
from engines.limits import check_regular_file
from engines.progress import Progress
from engines.registry import ModelInfo
from engines.text.model import load_text_model
from engines.requests import stamp, write_sidecar
from engines.text.request import (SampleDone, TextDone, TextRequest, TextStarted, TextToken, beam_sample, run,
                                  token_sample)
from engines.text.session import score_text


def _write_sample(path: str | None, sample: dict[str, Any], record: dict[str, Any], request_json: dict[str, Any]) -> None:
    """Write one sample: `.json` -> the whole record with the sample and its request; any other
    name -> the text, plus the sidecar NAME.json holding the request (what `--from` reads)."""
    if path is None:
        return
    if path.endswith(".json"):
        atomic.write_json(path, {**record, "sample": sample, "request": request_json})
    else:
        atomic.write_text(path, sample["text"])
        write_sidecar(path, request_json, {"text": sample["text"], "total_logprob": sample["total_logprob"]})


def request_from_args(args: argparse.Namespace, info: ModelInfo, defaults: dict[str, Any] | None = None) -> TextRequest:
    """The TextRequest `chainrule generate text` flags describe (the card's decoding defaults first)."""
    if defaults is None:
        defaults = dict(info.card.get("decoding_defaults") or {})
    config = config_from_args(args, defaults)
    check_count(args.count, config.seed)
    if config.strategy == "beam" and args.count != 1:
        raise InputError(f"--count does not apply to --strategy beam: beam search returns --num-return-sequences "
                         f"hypotheses (at most --num-beams, {config.num_beams}); leave --count out")
    return TextRequest(model=info.id, prompt=args.prompt, max_new_tokens=args.max_new_tokens, stop=tuple(args.stop),
                       count=args.count, decoding=config, turns=turns_from_args(args))


def turns_from_args(args: argparse.Namespace) -> tuple:
    """The chat turns of `--system` / `--user` or `--chat FILE` (none: a plain prompt)."""
    from engines.text.chat import ChatTurn, read_turns_file

    system, user, chat = getattr(args, "system", None), getattr(args, "user", None), getattr(args, "chat", None)
    if chat is not None and (system is not None or user is not None):
        raise InputError("give the chat either as --chat FILE or as --system / --user, not both")
    if (chat is not None or user is not None or system is not None) and args.prompt:
        raise InputError("--prompt does not go with a chat (--user / --chat): the chat's turns are the prompt")
    if chat is not None:
        return read_turns_file(chat)
    if system is not None and user is None:
        raise InputError("--system needs --user: the reply answers the user's turn")
    if user is None:
        return ()
    return ((ChatTurn("system", system),) if system is not None else ()) + (ChatTurn("user", user),)


def generate(args: argparse.Namespace, info: ModelInfo) -> dict[str, Any]:
    check_out_path(getattr(args, "out", None))  # before any work: nothing generated is lost
    model = load_text_model(info)
    request = request_from_args(args, info, model.decoding_defaults)
    return generate_from_request(request, info, args.out, model=model)


def generate_from_request(request: TextRequest, info: ModelInfo, out: str | None, *, model=None) -> dict[str, Any]:
    """Run `request` (engines.text.request.run, as the studio does) and write each sample to `out`
    (several: _1, _2 ...) with its own request (`for_sample(i)`, stamped) beside or inside it.

    The result: model, seed, settings, notes, samples (text, tokens, log-probs ... path) and request."""
    check_out_path(out)
    if model is None:
        model = load_text_model(info)
    request = request.resolved()
    seed = request.decoding.seed
    config = request.decoding
    settings = {**config.to_dict(), "seed": seed, "max_new_tokens": request.max_new_tokens, "prompt": request.prompt,
                "stop": list(request.stop)}
    record: dict[str, Any] = {"model": info.id, "seed": seed, "settings": settings, "notes": []}
    beam = config.strategy == "beam"
    paths = sample_paths(out, request.count)
    samples: list[dict[str, Any]] = []
    tokens: list = []  # the events of the sample being made (kept if interrupted)

    def keep(i: int, sample: dict[str, Any], path: str | None) -> None:
        sample["path"] = path
        samples.append(sample)
        _write_sample(path, sample, record, stamp(request.for_sample(i).to_json(), info))

    try:
        for ev in run(request, info, model=model, n_alternatives=0):
            if isinstance(ev, TextStarted):
                record["notes"] = list(ev.notes)
                print_notes(ev.notes)
            elif isinstance(ev, TextToken):
                tokens.append(ev.token)
            elif isinstance(ev, SampleDone) and not beam:
                tokens = []
                # written as soon as it is done: an interrupt later loses none of the finished samples
                keep(ev.index, ev.sample.to_dict(), paths[ev.index])
            elif isinstance(ev, TextDone) and beam:
                beam_paths = sample_paths(out, len(ev.samples))
                for i, s in enumerate(ev.samples):
                    keep(0, s.to_dict(), beam_paths[i])
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: keep what was made, then stop
        if beam:
            beams = getattr(exc, "beam_results", [])
            kept = [beam_sample(model, request, b, cut_short=not b.finished) for b in beams]
            beam_paths = sample_paths(out, len(kept))
            for path, s in zip(beam_paths, kept):
                keep(0, s.to_dict(), path)
                if path is None:  # nothing on disk: the text on stdout is what the user keeps
                    print(s.text)
            steps = getattr(exc, "beam_steps", 0)
            if kept:
                what = (f"the {len(kept)} best hypotheses so far" if len(kept) > 1 else "the best hypothesis so far")
                ended = sum(b.finished for b in beams)
                what += f" ({ended} ended by end-of-text)" if ended else " (cut short)"
                where = f"wrote {what} to {', '.join(str(p) for p in beam_paths)}" if out is not None else f"printed {what}"
            else:
                where = "nothing was kept (the search had not taken its first step)"
            stopped_note(exc, f"after {steps} of at most {request.max_new_tokens} beam search steps: {where}")
            raise
        done = len(samples)
        if tokens and done < request.count:
            keep(done, token_sample(model, request, seed + done, tokens, "interrupted").to_dict(), paths[done])
        if out is None:  # nothing on disk: the text on stdout is what the user keeps
            for s in samples:
                print(s["text"])
        where = (f"wrote what was generated so far to {', '.join(str(s['path']) for s in samples)}"
                 if out is not None and samples else "printed what was generated so far" if samples
                 else "nothing was generated yet")
        stopped_note(exc, f"after {done} of {request.count} samples: {where}")
        raise
    return {**record, "samples": samples, "request": request.to_json()}


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
    context after the first). `--limit N` keeps the first N examples, in order; `--sample N` a
    seeded random N of them (`engines.cli_common.eval_indices`).
    """
    from engines.text.session import score_ids

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
    n_available = len(examples)
    examples = [examples[i] for i in eval_indices(n_available, args)]
    total, n_tok, n_chars = 0.0, 0, 0
    progress = Progress(len(examples), "eval")
    for ex in examples:
        total += float(score_ids(model, [model.tokenizer.start_id], ex)[0].sum())
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
        "subset": eval_subset_label(len(examples), n_available, args),
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
