"""`chainrule`: the command-line face of the engines (also `python -m engines`).

The command names, options and JSON keys here are a contract the studio, scripts and
later modalities keep. Each modality implements its commands in a module named in
`MODALITY_COMMANDS` (functions `generate`, `score`, `evaluate`, `bench`; the steps they take
alike are in `engines.cli_common`); this file only parses, finds the model and reports.
Errors are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import shlex
import sys
from typing import Any, Sequence

from engines.decoding.config import FILTER_NAMES, STRATEGIES, DecodingConfig, unused_reason, unused_settings
from engines.decoding.sampler_table import SETTINGS
from engines.card_schema import printable
from engines.errors import ChainruleError, DecodingError, file_fault

# kind -> module implementing generate/score/evaluate/bench for that kind of model.
MODALITY_COMMANDS = {
    "text": "engines.text.commands",
    "image": "engines.image.commands",
    "audio": "engines.audio.commands",
    "density": "engines.density.commands",
}
TRAINERS = {
    "gpt": "engines.training.train_gpt",
    "pixelcnn": "engines.training.train_pixelcnn",
    "wavenet": "engines.training.train_wavenet",
    "vocoder": "engines.training.train_vocoder",
    "recogniser": "engines.training.train_recogniser",
    "mel-prior": "engines.training.train_mel_prior",
    "nade": "engines.training.train_nade",
    "made": "engines.training.train_made",
}

EXIT_ERROR = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (plus the usage) and exit 2."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        self.print_usage(sys.stderr)
        # argparse quotes the offending values: a newline or ESC in one must not split or forge the line
        self.exit(EXIT_USAGE, f"chainrule: error: {printable(message)}\n")


# --- decoding options --------------------------------------------------------------

def add_decoding_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding (defaults come from the model card)")
    g.add_argument("--strategy", choices=STRATEGIES)
    for setting in SETTINGS:  # every sampler setting of the table of samplers
        g.add_argument(setting.flag, type=setting.type, help=setting.help)
    g.add_argument("--num-beams", type=int)
    g.add_argument("--length-penalty", type=float)
    g.add_argument("--no-early-stopping", dest="early_stopping", action="store_false", default=None)
    g.add_argument("--num-return-sequences", type=int)
    g.add_argument(
        "--chain",
        help=f"sampler order, comma-separated names from: {', '.join(FILTER_NAMES)} (hyphens allowed)",
    )
    g.add_argument("--seed", type=int, help="same model, input, settings and seed give the same output")


_DECODING_FIELDS = (
    "strategy", *(setting.field for setting in SETTINGS), "num_beams", "length_penalty", "early_stopping",
    "num_return_sequences", "seed",
)


def config_from_args(args: argparse.Namespace, defaults: dict[str, Any] | None = None, *,
                     refuse_unused: bool = True) -> DecodingConfig:
    """Card defaults, overridden by whatever the user passed; validated on creation. With
    `refuse_unused` (once the card's defaults are known), a flag the resulting strategy does not
    read (--num-beams without beam search, --temperature with greedy) is refused, not ignored."""
    values: dict[str, Any] = dict(defaults or {})
    given = []
    for name in _DECODING_FIELDS:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
            given.append(name)
    chain = getattr(args, "chain", None)
    if chain is not None:
        values["chain"] = tuple(s.strip().replace("-", "_") for s in chain.split(",") if s.strip())
        given.append("chain")
    config = DecodingConfig.from_dict(values)
    unused = unused_settings(config, given) if refuse_unused else []
    if unused:
        flag = "--no-early-stopping" if unused[0] == "early_stopping" else "--" + unused[0].replace("_", "-")
        beam_available = getattr(args, "modality", "text") == "text"
        raise DecodingError(f"{flag} does not apply to --strategy {config.strategy}: "
                            f"{unused_reason(unused[0], config.strategy, beam_available)}; or leave {flag} out")
    return config


# --- parser ------------------------------------------------------------------------

def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model id (see `chainrule models`)")
    p.add_argument("--models-dir", action="append", default=[], metavar="DIR", help="extra folder of models (repeatable)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="chainrule", description="Chainrule Studio engines: generate, score, evaluate and benchmark autoregressive models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("models", help="list installed models")
    p.add_argument("--models-dir", action="append", default=[], metavar="DIR")
    p.add_argument("--json", action="store_true")

    gen = sub.add_parser("generate", help="generate samples",
                         usage="chainrule generate {text,image,audio} ... | chainrule generate --from FILE [--out PATH]")
    gen.add_argument("--from", dest="from_file", metavar="FILE",
                     help="run again the request an exported sample carries (PNG, WAV, FLAC or JSON from chainrule "
                          "or the studio): the same sample, bit for bit")
    gen.add_argument("--out", dest="from_out", metavar="PATH", help="with --from: where to write the sample")
    gen.add_argument("--models-dir", dest="from_models_dir", action="append", default=[], metavar="DIR",
                     help="with --from: extra folder of models (repeatable)")
    gen.add_argument("--json", dest="from_json", action="store_true", help="with --from: print the result as JSON")
    gen.set_defaults(generate_parser=gen)
    gsub = gen.add_subparsers(dest="modality", required=False, parser_class=_Parser)
    for modality in ("text", "image", "audio"):
        g = gsub.add_parser(modality, help=f"generate {modality}")
        _add_model_arguments(g)
        add_decoding_arguments(g)
        g.add_argument("--count", type=int, default=1, help="number of samples")
        g.add_argument("--out", help="output file (several samples get _1, _2 ... suffixes)")
        if modality == "text":
            g.add_argument("--prompt", default="", help="text to continue (empty: start of a document)")
            g.add_argument("--max-new-tokens", type=int, default=200)
            g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
            g.add_argument("--system", help="chat: the system turn (with --user; the model needs a chat template)")
            g.add_argument("--user", help="chat: the user's turn, rendered with the model's chat template; the reply "
                                          "ends at the end-of-turn token")
            g.add_argument("--chat", metavar="FILE.json",
                           help="chat: the turns, a JSON list of {\"role\", \"content\"} (system / user / assistant)")
        elif modality == "image":
            g.add_argument("--label", type=int, help="digit to condition on")
            g.add_argument("--guidance", type=float, metavar="W",
                           help="classifier-free guidance toward --label (0 off): log p(x|label) + W (log p(x|label) - log p(x))")
            g.add_argument("--init", help="PNG whose known pixels are kept")
            g.add_argument("--mask", help="PNG: white pixels are regenerated")
            g.add_argument("--candidates", type=int, metavar="K",
                           help="posterior-aware completion: draw K candidates, keep one by the likelihood of the known pixels after the mask")
            g.add_argument("--ordering", help="pixel ordering (density models)")
            g.add_argument("--ensemble", type=int, metavar="K",
                           help="MADE density models: log p(image) reported as the mixture of the first K masks "
                                "(default: the card's)")
            g.add_argument("--scale", type=int, metavar="N",
                           help="also write NAME@Nx.png, N times larger (nearest neighbour), beside each model-size "
                                "PNG; both carry the request")
        else:
            g.add_argument("--digit", type=int)
            g.add_argument("--speaker")
            g.add_argument("--prompt", help="WAV to continue")
            g.add_argument("--seconds", type=float, help="length (WaveNet; default 1); a speech model's prior decides")
            g.add_argument("--frame-temperature", type=float,
                           help="speech models: temperature of the frame prior (0: each frame's most likely value)")
            g.add_argument("--resynth", metavar="WAV",
                           help="speech models: re-speak this recording from its own frames (--speaker: in another voice)")

    p = sub.add_parser("score", help="exact log-likelihood of a text, image or recording")
    _add_model_arguments(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text")
    src.add_argument("--image")
    src.add_argument("--audio")
    p.add_argument("--prompt", help="text the scored text follows (not scored itself)")
    p.add_argument("--label", type=int)
    p.add_argument("--digit", type=int)
    p.add_argument("--speaker")
    p.add_argument("--ensemble", type=int, metavar="K", help="MADE: mixture of the first K masks (default: the card's)")
    p.add_argument("--ordering", help="MADE: report the per-pixel conditionals under this ordering "
                                      "(raster, reverse, column, random or random:SEED)")

    p = sub.add_parser("eval", help="average negative log-likelihood on a data set")
    _add_model_arguments(p)
    # No defaults here (None): a flag the chosen --task does not read is refused only if it was given
    # (`refuse_unused_flags`); --data is required where it is read, --split is "test" unless given.
    p.add_argument("--data", help="data file (text, .npz); required by --task likelihood (the default) and "
                                  "resynthesis; --task recognition of a label-conditioned image model: test "
                                  "images to complete (optional)")
    p.add_argument("--split", choices=("train", "val", "test"), help="default: test")
    p.set_defaults(usage_parser=p)
    p.add_argument("--limit", type=int, metavar="N", help="the first N examples of the split, in order "
                                                         "(labelled 'first N of M')")
    p.add_argument("--sample", type=int, metavar="N",
                   help="a random N examples of the split (without replacement, drawn with --seed): its mean "
                        "estimates the whole split's, unlike --limit's first N; not with --limit")
    p.add_argument("--seed", type=int, metavar="S", help="--sample: the seed of the draw (default 0)")
    p.add_argument("--ensemble", type=int, metavar="K", help="MADE: mixture of the first K masks (default: the card's)")
    p.add_argument("--task", choices=("likelihood", "generation", "resynthesis", "recognition"),
                   help="what to measure: likelihood (default); speech models: generation, resynthesis; image and "
                        "density models: recognition (how the recogniser reads their samples)")
    p.add_argument("--seeds", type=int, help="--task generation: clips per digit and speaker; --task recognition: "
                                             "samples per digit (x10 for unconditional models)")
    p.add_argument("--write-card", action="store_true", help="record the result (and this command) in the model's card.json metrics")

    p = sub.add_parser("bench", help="speed benchmarks on the shipped models")
    p.add_argument("modality", choices=("text", "image", "audio", "density"))
    p.add_argument("--models-dir", action="append", default=[], metavar="DIR")
    p.add_argument("--json", action="store_true")
    p.add_argument("--write-card", action="store_true",
                   help="record the result (and this command) in the benchmarked models' card.json metrics")

    p = sub.add_parser("judge", help="what a recogniser (a classifier model) reads in recordings or images")
    p.add_argument("modality", choices=("audio", "image"), help="audio: digit and speaker; image: digit (28x28 grey)")
    p.add_argument("files", nargs="+", metavar="FILE", help="recordings (WAV, FLAC, ...) or 28x28 grey PNGs")
    p.add_argument("--model", help="classifier id (default: the installed recogniser of that modality)")
    p.add_argument("--models-dir", action="append", default=[], metavar="DIR", help="extra folder of models (repeatable)")
    p.add_argument("--json", action="store_true", help="print a list of results as JSON")

    p = sub.add_parser("quantize", help="write an int8 or int4 copy of a text model (ONNX Runtime's quantization "
                                        "tools), with its measured quality change and speed in its card")
    p.add_argument("--model", required=True, help="text model id (see `chainrule models`)")
    p.add_argument("--bits", type=int, choices=(8, 4), required=True,
                   help="8: dynamic int8 (MatMulInteger, per-channel weights); 4: int4 MatMulNBits (blocks of 32)")
    p.add_argument("--out", metavar="DIR", help="the new model folder (must not exist; its name is the new id; "
                                                "default: ID-int8 / ID-int4 in the user models folder)")
    p.add_argument("--data", help="the model's own data (as `chainrule eval --data`): measure the quality change "
                                  "on --split; without it only speed is measured")
    p.add_argument("--split", choices=("train", "val", "test"), help="with --data: the split (default: val)")
    p.add_argument("--weight-type", choices=("auto", "qint8", "quint8"),
                   help="--bits 8: the int8 weight type (default auto: both are made and measured, the faster "
                        "kept unless its quality is worse by over 0.1%%)")
    p.add_argument("--repeats", type=int, default=5, help="rounds of the speed measurement (default 5)")
    p.add_argument("--models-dir", action="append", default=[], metavar="DIR", help="extra folder of models (repeatable)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("train", help="train a model (needs torch: pip install 'chainrule-studio[train]')")
    p.add_argument("family", choices=tuple(TRAINERS))
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of the trainer (see `chainrule train FAMILY --help`)")
    return parser


# --- commands ----------------------------------------------------------------------

def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def cmd_models(args: argparse.Namespace) -> int:
    from engines.card_metrics import human_size, key_metrics
    from engines.registry import list_models, printable
    from engines.runtime import runtime_info

    provider = runtime_info()["provider"]
    models = list_models(args.models_dir)
    if args.json:
        _print_json([{**m.summary(), "provider": provider} for m in models])
        return 0
    if not models:
        print("No models installed. Put a model folder (card.json + .onnx files) in a models dir and pass --models-dir DIR.")
        return 0
    rows = [("ID", "KIND", "PARAMS", "SIZE", "METRICS", "STATUS")]
    for m in models:
        metrics = key_metrics(m.metrics)
        params = f"{m.parameters:,}" if isinstance(m.parameters, int) else "?"
        status = "ok" if m.usable else f"unusable: {m.problem}"
        # Every cell comes from a card: escaped, so an id holding ESC or a newline cannot fake a row.
        rows.append(tuple(printable(c) for c in (m.id, m.kind, params, human_size(m.size_bytes), metrics or "-", status)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[5])
    print(f"\nprovider: {provider}")
    return 0


def _modality_module(kind: str):
    name = MODALITY_COMMANDS[kind]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise ChainruleError(f"{kind} models are not supported by this version of chainrule yet") from exc
        raise


# Options of `score` and `eval` that only some kinds of model use, with what they are for: given
# to another kind they are refused (one line), never silently ignored.
_KIND_FLAGS = {
    "prompt": (("text",), "it is the text a scored text follows"),
    "label": (("image",), "it is the digit a PixelCNN image model is conditioned on"),
    "digit": (("audio",), "it is the digit a WaveNet audio model is conditioned on"),
    "speaker": (("audio",), "it is the voice a WaveNet audio model is conditioned on"),
    "ensemble": (("density",), "it sets how many MADE mask sets are mixed"),
    "ordering": (("density",), "it picks the pixel ordering of a MADE density model"),
    "task": (("audio", "image", "density"), "it picks a speech, image or density model's evaluation"),
    "seeds": (("audio", "image", "density"), "it sets how many samples a speech, image or density evaluation draws"),
}
_KIND_WORDS = {"text": "a text model", "image": "a PixelCNN image model", "audio": "a WaveNet audio model",
               "density": "an unconditional density model (NADE/MADE)"}


# Options of `eval` that only some --task values read (None: no --task, i.e. likelihood).
_TASK_FLAGS = {
    "seeds": ("generation", "recognition"),
    "limit": (None, "likelihood", "resynthesis"),
    "sample": (None, "likelihood", "resynthesis"),
    "seed": (None, "likelihood", "resynthesis"),
    "ensemble": (None, "likelihood"),
    "data": (None, "likelihood", "resynthesis", "recognition"),  # recognition: label-conditioned image models only
    "split": (None, "likelihood", "resynthesis"),
}
# --task values that measure a data set: `eval` needs --data for them.
_DATA_TASKS = (None, "likelihood", "resynthesis")


def _either(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def refuse_unused_flags(args: argparse.Namespace, model) -> None:
    """ChainruleError for the first option of `_KIND_FLAGS` given for a kind of model that does not use it,
    then for the first of `_TASK_FLAGS` that the chosen --task does not read (--data and --split have no
    parser defaults, so given ones are told from absent ones), then for --data given to a density model's
    recognition. (An unconditional image model's recognition refuses --data itself: that needs its card.)"""
    for name, (kinds, use) in _KIND_FLAGS.items():
        if getattr(args, name, None) is not None and model.kind not in kinds:
            flag = "--" + name.replace("_", "-")
            raise ChainruleError(f"{flag} does not apply to {model.id}, {_KIND_WORDS.get(model.kind, model.kind + ' model')}: "
                                 f"{use}; leave {flag} out")
    if args.command != "eval":
        return
    task = getattr(args, "task", None)
    for name, tasks in _TASK_FLAGS.items():
        if getattr(args, name, None) is not None and task not in tasks:
            shown = "likelihood (the default)" if task is None else task
            raise ChainruleError(f"--{name} does not apply to --task {shown}: it is read only by --task "
                                 f"{_either([t or 'likelihood' for t in tasks if t != 'likelihood'])}; "
                                 f"leave --{name} out")
    if task == "recognition" and getattr(args, "data", None) is not None and model.kind == "density":
        raise ChainruleError(f"--data does not apply to --task recognition of {model.id}, "
                             f"{_KIND_WORDS.get(model.kind, model.kind + ' model')}: its recognition reads only its "
                             "own samples (test images are completed for label-conditioned image models only); "
                             "leave --data out")


def _check_eval_data(args: argparse.Namespace) -> None:
    """A usage error (exit 2) when the --task measures a data set and --data is missing."""
    task = getattr(args, "task", None)
    if args.data is None and task in _DATA_TASKS:
        args.usage_parser.error(f"--task {task or 'likelihood'}{' (the default)' if task is None else ''} "
                                "measures a data set: the argument --data is required")


def cmd_generate_from(args: argparse.Namespace) -> int:
    """`chainrule generate --from FILE [--out PATH]`: read the request the file carries, run it with
    the modality's own request runner (the same one `generate <modality>` and the studio use)."""
    from engines.cli_common import print_notes
    from engines.registry import get_model
    from engines.requests import fingerprint_note, read_request_file, request_from_json

    data = read_request_file(args.from_file)
    request = request_from_json(data)
    model = get_model(request.model, args.from_models_dir)
    wanted = request.kind
    if model.kind != wanted:
        raise ChainruleError(f"{args.from_file} holds a {wanted} request, but model {model.id!r} is now a "
                             f"{model.kind} model")
    note = fingerprint_note(data, model)
    if note:
        print_notes([note])
    module = _modality_module(model.kind)
    result = module.generate_from_request(request, model, args.from_out)
    if args.from_json:
        _print_json(result)
    else:
        module.print_result("generate", result)
    return 0


def cmd_modality(args: argparse.Namespace) -> int:
    from engines.registry import get_model

    if args.command == "generate":
        if args.from_file is not None:
            if args.modality is not None:
                args.generate_parser.error("--from runs the request stored in FILE: give no modality or generation "
                                           "options with it (only --out, --models-dir and --json)")
            return cmd_generate_from(args)
        if args.modality is None:
            args.generate_parser.error("choose what to generate (text, image or audio), or --from FILE")
        if args.from_out is not None or args.from_models_dir or args.from_json:
            args.generate_parser.error("put --out, --models-dir and --json after the modality "
                                       "(chainrule generate image --model ... --out x.png)")

    kind = args.modality if args.command == "generate" else None
    if kind is not None:
        config_from_args(args, refuse_unused=False)  # bad values before any model work (the card's strategy: later)
    if args.command == "eval":
        _check_eval_data(args)
        from engines.cli_common import check_eval_subset

        check_eval_subset(args)  # --sample with --limit: refused before any model is read
    model = get_model(args.model, args.models_dir)
    if model.kind == "classifier":
        modality = model.card.get("modality") if model.card.get("modality") in ("audio", "image") else "audio|image"
        raise ChainruleError(f"model {model.id!r} is a classifier: it generates and scores nothing; "
                             f"use `chainrule judge {modality} FILE... --model {model.id}`")
    if kind is not None and model.kind != kind and not (kind == "image" and model.kind == "density"):
        raise ChainruleError(f"model {model.id!r} is a {model.kind} model; use `chainrule generate {model.kind if model.kind != 'density' else 'image'}`")
    if kind is None:
        refuse_unused_flags(args, model)
    if args.command == "eval" and args.split is None and args.task in _DATA_TASKS:
        args.split = "test"  # the default, once it is known that the task reads a split
    module = _modality_module(model.kind)
    action = {"generate": "generate", "score": "score", "eval": "evaluate"}[args.command]
    result = getattr(module, action)(args, model)
    if args.command == "eval" and getattr(args, "write_card", False):
        record_metrics(model, args, result)
    if args.json:
        _print_json(result)
    else:
        module.print_result(args.command, result)
        if args.command == "eval" and result.get("subset"):
            print(f"examples scored: {result['subset']} ({result.get('split') or 'test'} split)")
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The `chainrule` command that produced a result, without --write-card (for the card)."""
    return "chainrule " + " ".join(shlex.quote(a) for a in args.argv if a != "--write-card")


def write_card_metric(model, key: str, values: dict[str, Any], command: str) -> None:
    """Store `values` (numbers and strings only) and the command under metrics[key] of the model's
    card.json, atomically; a missing or unreadable card is one ChainruleError naming it."""
    from engines import atomic

    card_path = model.path / "card.json"
    if not card_path.is_file():
        raise ChainruleError(f"{model.id} has no card.json to write metrics into ({model.path})")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChainruleError(f"cannot record metrics: {card_path} is not readable JSON ({file_fault(exc)}); "
                             "fix or restore the card first") from exc
    if not isinstance(card, dict) or not isinstance(card.get("metrics", {}), dict):
        raise ChainruleError(f"cannot record metrics: {card_path} is not a JSON object with a 'metrics' object")
    card.setdefault("metrics", {})[key] = {
        **{k: v for k, v in values.items() if isinstance(v, (int, float, str))},
        "command": command,
    }
    try:
        atomic.write_json(card_path, card)
    except OSError as exc:
        raise ChainruleError(f"cannot record metrics in {card_path}: {exc}") from exc


def record_metrics(model, args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Write an eval result into the model's card, keyed by data file and split, with its command."""
    from pathlib import Path

    task = getattr(args, "task", None)
    key = f"{Path(args.data or '').stem}/{args.split or 'test'}" + (f"/first{args.limit}" if args.limit else "")
    if getattr(args, "sample", None):  # a random subset is its own entry, never the full split's
        key += f"/random{args.sample}-seed{args.seed or 0}"
    key += f"/k{args.ensemble}" if getattr(args, "ensemble", None) else ""  # MADE: one entry per ensemble size
    if task == "generation":  # speech: recognition of its own samples (no data split is read)
        key = "generation/recognised"
    elif task == "recognition":  # images: the recogniser reading samples (and test-split completions)
        key = "recognition"
    elif task == "resynthesis":  # speech: recognition of the split re-spoken by the vocoder
        key += "/resynthesis"
    write_card_metric(model, key, result, _command_line(args))


def bench_card_parts(module, result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """model id -> the part of a bench result that measured it. A modality whose result holds several
    models says how to split it (`bench_card_parts` in its commands module); otherwise the result
    names its one model under "model"."""
    split = getattr(module, "bench_card_parts", None)
    if split is not None:
        return split(result)
    model_id = result.get("model")
    if not isinstance(model_id, str):
        raise ChainruleError("the bench result does not say which model it measured; nothing written to a card")
    return {model_id: result}


def record_bench(module, args: argparse.Namespace, result: dict[str, Any]) -> list[str]:
    """Write each benchmarked model's part under metrics["bench/<modality>"] of its card; the cards written."""
    from engines.registry import get_model

    parts = bench_card_parts(module, result)
    if not parts:
        raise ChainruleError("the bench result does not say which model it measured; nothing written to a card")
    command = _command_line(args)
    written = []
    for model_id, part in parts.items():
        info = get_model(model_id, args.models_dir)  # the folder the bench found it in (same search)
        write_card_metric(info, f"bench/{args.modality}", part, command)
        written.append(str(info.path / "card.json"))
    return written


def cmd_bench(args: argparse.Namespace) -> int:
    module = _modality_module(args.modality)
    result = module.bench(args)
    if getattr(args, "write_card", False):
        for card in record_bench(module, args, result):
            print(f"chainrule: recorded the result in {card}", file=sys.stderr)
    if args.json:
        _print_json({"results": result})
    else:
        for k, v in result.items():
            print(f"{k:>28}: {v}")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    """One line per file ('7_george_0.wav: seven (93%), george (71%)'), or --json; a file that cannot
    be read is one error line on stderr (the others are still judged) and the exit is non-zero."""
    from engines.cli_common import print_notes
    from engines.recognise import default_judge, get_recogniser, judge_file, verdict_record

    if args.model:
        judge = get_recogniser(args.model, args.modality, args.models_dir)
    else:
        judge = default_judge(args.modality, args.models_dir)
        if judge is None:
            raise ChainruleError(
                f"no {args.modality} recogniser is installed (a model of kind classifier reading {args.modality}); "
                "export one with python -m engines.training.export_recogniser, or pass --models-dir DIR")
    records, failed = [], 0
    for path in args.files:
        try:
            verdict, notes = judge_file(judge, path)
        except ChainruleError as exc:
            print(f"chainrule: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print_notes(f"{path}: {n}" for n in notes)
        if args.json:
            records.append(verdict_record(path, verdict))
        else:
            print(f"{path}: {verdict.text()}", flush=True)
    if args.json:
        _print_json(records)
    return EXIT_ERROR if failed else 0


def cmd_train(args: argparse.Namespace) -> int:
    try:  # look for torch without importing it: only the trainer modules may import it
        has_torch = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        has_torch = False
    if not has_torch:
        raise ChainruleError("training needs torch: pip install 'chainrule-studio[train]'")
    name = TRAINERS[args.family]
    try:
        trainer = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise ChainruleError(f"training {args.family} is not supported by this version of chainrule yet") from exc
        raise
    return int(trainer.main(args.rest) or 0)


def cmd_quantize(args: argparse.Namespace) -> int:
    from engines.text.quantize import cmd_quantize as run_quantize

    return run_quantize(args)


COMMANDS = {
    "models": cmd_models,
    "generate": cmd_modality,
    "score": cmd_modality,
    "eval": cmd_modality,
    "bench": cmd_bench,
    "judge": cmd_judge,
    "quantize": cmd_quantize,
    "train": cmd_train,
}


def _raise_terminated(signum, frame) -> None:
    from engines.errors import Terminated

    raise Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises Terminated (a KeyboardInterrupt) for the body: every Ctrl-C path (keep what was
    made, remove temporary files, say one line) runs for it too. Only the main thread can install it."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: Sequence[str] | None = None) -> int:
    from engines.errors import Terminated

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with _sigterm_as_interrupt():
            args = build_parser().parse_args(argv)
            args.argv = argv
            return COMMANDS[args.command](args)
    except ChainruleError as exc:  # messages quote paths and ids: escaped, so the one line stays one line
        print(f"chainrule: error: {printable(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:  # Ctrl-C (130) or SIGTERM (143, 128 + 15): one line, what was kept
        note = getattr(exc, "chainrule_note", None)
        word = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"chainrule: {word}" + (f" {note}" if note else ""), file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except BrokenPipeError:  # `chainrule ... | head`
        return 0
    except OSError as exc:  # the file system said no (disk full, permission, name too long): not a bug
        where = f": {exc.filename}" if exc.filename else ""
        print(f"chainrule: error: {printable(exc.strerror or exc)}{printable(where)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: still one line, unless debugging
        if os.environ.get("CHAINRULE_DEBUG"):
            raise
        print(f"chainrule: internal error: {type(exc).__name__}: {exc} (set CHAINRULE_DEBUG=1 for details)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
