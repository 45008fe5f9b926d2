"""`chainrule quantize`: a quantized copy of a text model folder, made with ONNX Runtime's own tools.

- `--bits 8`: `onnxruntime.quantization.quantize_dynamic`, weights per output channel, for every
  MatMul with a constant weight (and the Gather of the token embedding). Both 8-bit weight types
  (QInt8 and QUInt8) are made and measured side by side with the source; the faster one is kept
  unless its quality loss is more than `TIE_MARGIN` (relative) worse than the other's. The card
  records both and which was chosen, and why.
- `--bits 4`: `MatMulNBitsQuantizer` (MatMulNBits, symmetric, blocks of `INT4_BLOCK` weights).

Gemm nodes with a constant weight (Optimum's GPT-2 Conv1D layers) are first rewritten as
MatMul + Add (the same arithmetic), since neither tool quantizes Gemm.

The copy is a model folder like its source: every file of the source folder, the decoder
replaced. A folder with a card.json gets a new card (id `<id>-int8`/`-int4` or the --out folder's
name, `quantized_from`: the source id and card fingerprint, `quantization`: the command, the
tool, and the measured quality change and speed). A foreign folder (an Optimum export) stays
one, so it loads as any such export does; the same record goes into `quantization.json` beside it.

Quality (with `--data`): the `chainrule eval` code (`engines.text.commands.evaluate`) on the same
split, for the source and the copy, so the numbers compare with the card's. Speed: the measure of
`chainrule bench text` (greedy, batch 1, 256 new tokens after the prompt 'ROMEO:\\n', KV cache,
one thread), source and copy alternating in one run, median of the repeats.

Writes are atomic: everything is made in a hidden temporary folder beside --out, renamed to --out
only once the copy loads and has its card; any failure or interrupt removes the temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from engines.errors import ChainruleError, InputError, ModelLoadError, file_fault
from engines.registry import CARD_NAME, ModelInfo, inside, read_card

BITS = (8, 4)
INT4_BLOCK = 32
INT4_ACCURACY_LEVEL = 4  # MatMulNBits computes with int8 activations on the CPU (its fastest path)
WEIGHT_TYPES = ("QInt8", "QUInt8")
TIE_MARGIN = 0.001  # 0.1% (relative nats): closer than this, the faster candidate wins
RECORD_NAME = "quantization.json"  # a foreign folder's record (its card is built from its own config)
SPEED_PROMPT = "ROMEO:\n"  # engines.text.bench.PROMPT
SPEED_NEW_TOKENS = 256  # engines.text.bench.NEW_TOKENS
QUANTIZED_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "DynamicQuantizeLinear",
                 "MatMulNBits", "GatherBlockQuantized")


class QuantizeError(ChainruleError):
    """The model cannot be quantized (its graph, the tools missing): one line."""


# --- the tools -----------------------------------------------------------------------------

def _onnx():
    try:
        import onnx
        import onnxruntime.quantization  # noqa: F401 - imports onnx itself
    except ImportError as exc:
        raise QuantizeError("chainrule quantize needs the onnx package (ONNX Runtime's quantization tools use it): "
                            "pip install 'chainrule-studio[quantize]' (or pip install onnx)") from exc
    return onnx


@contextlib.contextmanager
def _quiet_tools():
    """ONNX Runtime's quantizers log advice ("consider pre-processing") to the root logger: silenced."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _gemm_to_matmul(model) -> int:
    """Rewrite each Gemm(A, W[, C]) with a constant 2-D W, alpha = beta = 1 and transA = 0 as
    MatMul(A, W or W^T) (+ Add C): the same product, in the form the quantizers take. In place;
    returns how many were rewritten."""
    onnx = _onnx()
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    new_nodes, rewritten = [], 0
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        w = node.input[1] if node.op_type == "Gemm" and len(node.input) > 1 else None
        if (w is None or w not in inits or len(inits[w].dims) != 2 or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            new_nodes.append(node)
            continue
        weight = w
        if attrs.get("transB", 0):
            if uses.get(w, 0) != 1:  # shared: keep it and add a transposed copy
                weight = f"{w}_t_for_{node.name or rewritten}"
                graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[w]).T.copy(), weight))
            else:
                t = inits[w]
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).T.copy(), w))
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        product = node.output[0] if bias is None else f"{node.output[0]}_matmul"
        name = node.name or f"gemm_{rewritten}"
        new_nodes.append(onnx.helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{name}_MatMul"))
        if bias is not None:
            new_nodes.append(onnx.helper.make_node("Add", [product, bias], [node.output[0]], name=f"{name}_Add"))
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(new_nodes)
    return rewritten


def _external_files(onnx, path: Path) -> list[str]:
    """File names the graph keeps its weights in besides itself (external data)."""
    model = onnx.load(str(path), load_external_data=False)
    names = set()
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                names.add(entry.value)
    return sorted(names)


def _op_counts(onnx, path: Path) -> dict[str, int]:
    model = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def weight_files(path: Path) -> list[Path]:
    """The graph and the external-data files it names (those that exist)."""
    folder = path.parent
    return [path, *(folder / n for n in _external_files(_onnx(), path)
                    if inside(folder, folder / n) and (folder / n).is_file())]


def quantize_graph(source: Path, target: Path, bits: int, weight_type: str = "QInt8") -> dict[str, Any]:
    """Write the quantized graph of `source` to `target`; what was done (ops, sizes). QuantizeError
    when the tools fail on the graph or it holds nothing they quantize."""
    onnx = _onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    external = bool(_external_files(onnx, source)) or source.stat().st_size > (1800 << 20)
    try:
        model = onnx.load(str(source))
        gemms = _gemm_to_matmul(model)
        with _quiet_tools():
            if bits == 8:
                quantize_dynamic(model, str(target), per_channel=True, weight_type=getattr(QuantType, weight_type),
                                 use_external_data_format=external)
            else:
                quant = MatMulNBitsQuantizer(model, bits=4, block_size=INT4_BLOCK, is_symmetric=True,
                                             accuracy_level=INT4_ACCURACY_LEVEL, op_types_to_quantize=("MatMul",))
                quant.process()
                quant.model.save_model_to_file(str(target), use_external_data_format=external)
    except (QuantizeError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - the tools raise anything (onnx checker, asserts, KeyError ...)
        raise QuantizeError(f"{source}: ONNX Runtime's {bits}-bit quantizer cannot quantize this graph "
                            f"({type(exc).__name__}: {file_fault(exc)})") from None
    def weight_ops(counts: dict[str, int]) -> int:
        return counts.get("MatMulInteger", 0) + counts.get("DynamicQuantizeMatMul", 0) + counts.get("MatMulNBits", 0)

    counts = _op_counts(onnx, target)
    quantized = {op: n for op, n in counts.items() if op in QUANTIZED_OPS}
    if weight_ops(counts) <= weight_ops(_op_counts(onnx, source)):  # nothing new (an int8 graph stays int8)
        raise QuantizeError(f"{source}: the graph has no MatMul with a constant weight that ONNX Runtime's "
                            f"{bits}-bit quantizer could turn into {'int8' if bits == 8 else 'int4'} "
                            "(already quantized, or weights computed at run time); nothing was written")
    return {"quantized_ops": quantized, "gemm_rewritten_as_matmul": gemms, "external_data": external}


# --- measuring -----------------------------------------------------------------------------

def _variant(info: ModelInfo, folder: Path, decoder: str) -> ModelInfo:
    """`info` with its files read from `folder` and the decoder file `decoder` (a candidate graph)."""
    card = copy.deepcopy(info.card)
    card.setdefault("files", {})["decoder"] = decoder
    return dataclasses.replace(info, path=folder, card=card, metrics={})


def _speed_prompt(model) -> list[int]:
    try:
        ids = list(model.tokenizer.encode(SPEED_PROMPT))
    except ChainruleError:
        ids = []
    return ids or [model.tokenizer.start_id]


def measure_speed(infos: Sequence[ModelInfo], *, threads: int = 1, repeats: int = 5,
                  new_tokens: int = SPEED_NEW_TOKENS) -> list[dict[str, Any]]:
    """tokens/s of each model, measured as `chainrule bench text` does (greedy, batch 1, KV cache,
    `new_tokens` after the prompt), the models taking turns (round-robin) so load hits all alike.
    Each: tokens_per_s (median), runs (all), tokens (the greedy tokens of the last run)."""
    from engines.decoding.config import DecodingConfig
    from engines.generation import generate_steps
    from engines.text.decoder import KVCacheStepModel
    from engines.text.model import load_text_model

    models = [load_text_model(info, threads=threads) for info in infos]
    contexts = [_speed_prompt(m) for m in models]
    config = DecodingConfig(strategy="greedy")
    times: list[list[float]] = [[] for _ in models]
    tokens: list[list[int]] = [[] for _ in models]
    for r in range(repeats + 1):  # the first round warms every session up and is not counted
        for i, model in enumerate(models):
            step_model = KVCacheStepModel(model.decoder)
            t0 = time.perf_counter()
            toks = [ev.value for ev in generate_steps(step_model, [contexts[i]], config, new_tokens, seed=0,
                                                      n_alternatives=0)]
            elapsed = time.perf_counter() - t0
            if r:
                times[i].append(elapsed)
                tokens[i] = [int(t) for t in toks]
    return [{"tokens_per_s": round(new_tokens / statistics.median(t), 1),
             "runs": [round(new_tokens / x, 1) for x in t], "tokens": toks} for t, toks in zip(times, tokens)]


def agreement(reference: Sequence[int], other: Sequence[int]) -> dict[str, Any]:
    """How far two greedy continuations agree: the common prefix and the share of equal positions."""
    n = min(len(reference), len(other))
    prefix = next((i for i in range(n) if reference[i] != other[i]), n)
    same = sum(a == b for a, b in zip(reference, other))
    return {"greedy_same_prefix": prefix, "greedy_agreement": round(same / max(1, n), 4), "greedy_tokens": n}


def measure_quality(info: ModelInfo, data: str, split: str) -> dict[str, Any]:
    """`chainrule eval --model ID --data DATA --split SPLIT` on `info` (the same code)."""
    from engines.text.commands import evaluate

    args = argparse.Namespace(data=data, split=split, limit=None, sample=None, seed=None)
    result = evaluate(args, info)
    result.pop("subset", None)
    return result


def _headline(card: dict[str, Any]) -> str:
    """The quality figure of a model's kind: nats per character for a character model, per token otherwise."""
    tok = card.get("tokenizer")
    return "nats_per_char" if isinstance(tok, dict) and tok.get("type") == "char" else "nats_per_token"


def _value(result: dict[str, Any], metric: str) -> float:
    return float(result["nats_per_element"] if metric == "nats_per_token" else result[metric])


# --- the command ---------------------------------------------------------------------------

def _default_out(info: ModelInfo, bits: int) -> Path:
    from engines.registry import user_models_dir

    return user_models_dir() / f"{info.id}-int{bits}"


def _check_out(out: Path) -> None:
    try:
        if out.exists() or out.is_symlink():
            raise InputError(f"--out {out} already exists; chainrule quantize writes a new folder and never "
                             "replaces one: give another --out, or remove it first")
        if len(os.fsencode(out.name)) > 200:
            raise InputError(f"--out: the folder name is {len(os.fsencode(out.name))} bytes long; at most 200")
        if not out.parent.is_dir():
            raise InputError(f"--out {out}: folder {out.parent} does not exist (create it first); nothing was written")
    except OSError as exc:
        raise InputError(f"--out {out}: {exc.strerror or exc}; nothing was written") from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: folder {out.parent} is not writable; nothing was written")


def _umask() -> int:
    from engines.atomic import _UMASK

    return _UMASK


def _copy_folder(src: Path, dst: Path, skip: set[str]) -> None:
    """Every file of the model folder `src` (sub-folders too) into `dst`, but those in `skip` (names
    relative to `src`). A link is copied as the file it names, refused when that lies outside `src`."""
    from engines.registry import MAX_FOLDER_DEPTH, MAX_FOLDER_ENTRIES

    seen = 0
    for root, dirs, files in os.walk(src):
        rel_root = Path(root).relative_to(src)
        if len(rel_root.parts) >= MAX_FOLDER_DEPTH:
            raise ModelLoadError(f"{src}: sub-folders nest deeper than {MAX_FOLDER_DEPTH} levels; nothing was written")
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            seen += 1
            if seen > MAX_FOLDER_ENTRIES:
                raise ModelLoadError(f"{src}: more than {MAX_FOLDER_ENTRIES:,} files; nothing was written")
            rel = rel_root / name
            if rel.as_posix() in skip or name.startswith("."):
                continue
            path = src / rel
            if not inside(src, path):
                raise ModelLoadError(f"{src}: {rel} leads outside the model folder; refused")
            if not path.is_file():
                continue  # FIFOs, devices, sockets: no model file is one
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dst / rel)


def _choose(candidates: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The kept 8-bit candidate and the reason, in words."""
    if len(candidates) == 1:
        return candidates[0], "the only candidate"
    fast = max(candidates, key=lambda c: c["speed"]["tokens_per_s"])
    if all(c.get("quality") for c in candidates):
        best = min(candidates, key=lambda c: c["quality"]["relative_change"])
        gap = fast["quality"]["relative_change"] - best["quality"]["relative_change"]
        if fast is best:
            return fast, "both faster and closer to the source"
        if gap > TIE_MARGIN:
            return best, (f"closer to the source ({best['weight_type']} {best['quality']['relative_change']:+.3%} vs "
                          f"{fast['weight_type']} {fast['quality']['relative_change']:+.3%}; the faster one loses "
                          f"more than {TIE_MARGIN:.1%})")
        return fast, (f"faster ({fast['speed']['tokens_per_s']} vs "
                      f"{min(c['speed']['tokens_per_s'] for c in candidates)} tokens/s) and within {TIE_MARGIN:.1%} "
                      "of the other's quality")
    return fast, "faster (quality was not measured: no --data)"


def quantize_model(info: ModelInfo, bits: int, out: str | Path | None = None, *, data: str | None = None,
                   split: str = "val", command: str = "", repeats: int = 5, threads: int = 1,
                   weight_types: Sequence[str] = WEIGHT_TYPES,
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the quantized copy of `info` to `out` (default: the user models folder, `<id>-int<bits>`)
    and return what was measured. Refusals (InputError/QuantizeError) come before anything is written."""
    onnx = _onnx()
    import onnxruntime as ort

    if bits not in BITS:
        raise InputError(f"--bits {bits} is not supported: 8 (int8, dynamic) or 4 (int4 MatMulNBits)")
    if info.kind != "text":
        raise InputError(f"model {info.id!r} is a {info.kind} model; chainrule quantize makes copies of text models "
                         "(GPT decoders) only")
    if not info.usable:
        raise ModelLoadError(f"model {info.id!r} cannot be used: {info.problem}")
    if out is not None and not str(out).strip():
        raise InputError("--out is empty; give a folder name")
    out = Path(out).expanduser() if out is not None else _default_out(info, bits)
    if info.path.resolve() == out.resolve() or inside(info.path, out):
        raise InputError(f"--out {out} lies inside the source model's folder {info.path}; give a folder beside it")
    if data is not None:
        from engines.text.commands import read_split

        read_split(data, split)  # a missing or unreadable --data is refused before any work
    foreign = info.card.get("foreign")
    decoder = info.file("decoder")
    decoder_rel = decoder.relative_to(info.path).as_posix()
    try:
        external = _external_files(onnx, decoder)
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError, ValueError, OSError ... for a bad file
        raise QuantizeError(f"{decoder}: not a readable ONNX graph ({type(exc).__name__}: {file_fault(exc)}); "
                            "nothing was written") from None
    skip = {decoder_rel, *(Path(decoder_rel).parent.joinpath(n).as_posix() for n in external)}
    if not foreign:
        skip.add(CARD_NAME)
    if out == _default_out(info, bits):
        out.parent.mkdir(parents=True, exist_ok=True)
    _check_out(out)
    say = log or (lambda _m: None)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the model folder is an ordinary one
        _copy_folder(info.path, tmp, skip)
        types = list(weight_types) if bits == 8 else ["int4"]
        candidates: list[dict[str, Any]] = []
        for wt in types:
            # each candidate in its own hidden sub-folder under the decoder's own file name, so the
            # external-data file a large graph names (`model.onnx.data`) is already the right one
            name = f".candidate-{wt}/{Path(decoder_rel).name}"
            (tmp / name).parent.mkdir()
            say(f"quantizing {info.id} to {bits} bits" + (f" ({wt} weights)" if bits == 8 else f" (blocks of {INT4_BLOCK})"))
            done = quantize_graph(decoder, tmp / name, bits, wt)
            candidates.append({"weight_type": wt, "file": name, **done,
                               "file_bytes": sum(f.stat().st_size for f in (tmp / name).parent.iterdir())})
        variants = [_variant(info, tmp, c["file"]) for c in candidates]

        metric = _headline(info.card)
        source_quality = None
        if data is not None:
            say(f"evaluating {info.id} on {data} ({split})")
            source_quality = measure_quality(info, data, split)
            for c, v in zip(candidates, variants):
                say(f"evaluating the {c['weight_type']} copy")
                q = measure_quality(v, data, split)
                src_v, q_v = _value(source_quality, metric), _value(q, metric)
                c["quality"] = {"metric": metric, "source": src_v, "copy": q_v, "relative_change": (q_v - src_v) / src_v,
                                "eval": q}
        say(f"measuring tokens/s (source and {len(variants)} cop{'y' if len(variants) == 1 else 'ies'} in turn, "
            f"{repeats} rounds, {threads} thread{'s' if threads != 1 else ''})")
        speeds = measure_speed([info, *variants], threads=threads, repeats=repeats)
        for c, s in zip(candidates, speeds[1:]):
            c["speed"] = {"tokens_per_s": s["tokens_per_s"], "source_tokens_per_s": speeds[0]["tokens_per_s"],
                          "speedup": round(s["tokens_per_s"] / speeds[0]["tokens_per_s"], 2),
                          **agreement(speeds[0]["tokens"], s["tokens"])}
        chosen, reason = _choose(candidates)

        # the kept graph becomes the decoder; the others go
        target = tmp / decoder_rel
        target.parent.mkdir(parents=True, exist_ok=True)
        for made in (tmp / chosen["file"]).parent.iterdir():  # the graph (+ its external data)
            os.replace(made, target.parent / made.name)
        for c in candidates:
            shutil.rmtree((tmp / c["file"]).parent)

        new_id = out.name
        record = _record(info, bits, chosen, candidates, reason, source_quality, speeds[0], data, split,
                         command, threads, repeats, ort.__version__, decoder, target)
        if foreign:
            from engines import atomic

            atomic.write_json(tmp / RECORD_NAME, {"id": new_id, **record})
        else:
            _write_card(info, tmp, new_id, bits, record, chosen, data, split)
        check = read_card(tmp, "extra")
        if check is None or not check.usable:
            raise QuantizeError(f"the quantized copy of {info.id} does not load: "
                                f"{check.problem if check else 'not recognised as a model folder'}; nothing was written")
        from engines.text.model import load_text_model

        load_text_model(check)  # opens the graph: a copy that cannot run is never renamed into place
        from engines import atomic

        for path in sorted(tmp.rglob("*")):
            if path.is_file():
                atomic.fsync_file(path)
        if out.exists() or out.is_symlink():
            raise InputError(f"--out {out} appeared while quantizing; nothing was written")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"model": new_id, "path": str(out), "source": info.id, **record}


def _record(info, bits, chosen, candidates, reason, source_quality, source_speed, data, split, command, threads,
            repeats, ort_version, decoder, target) -> dict[str, Any]:
    from engines.requests import model_fingerprint

    def public(c: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in c.items() if k not in ("file", "quality", "external_data")}
        if c.get("quality"):
            out["quality"] = {k: v for k, v in c["quality"].items() if k != "eval"}
        return out

    method = ("onnxruntime.quantization.quantize_dynamic (per-channel weights, dynamic int8 activations)" if bits == 8
              else f"onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer (MatMulNBits, symmetric, "
                   f"block size {INT4_BLOCK}, accuracy_level {INT4_ACCURACY_LEVEL})")
    quality: dict[str, Any]
    if chosen.get("quality"):
        q = chosen["quality"]
        quality = {"measured": True, "data": data, "split": split, "metric": q["metric"], "source": q["source"],
                   "copy": q["copy"], "relative_change": q["relative_change"],
                   "eval_code": "chainrule eval (engines.text.commands.evaluate)"}
        stored = (info.metrics.get(f"{Path(data).stem}/{split}") or {}) if data else {}
        key = "nats_per_char" if q["metric"] == "nats_per_char" else "nats_per_element"
        if isinstance(stored, dict) and isinstance(stored.get(key), (int, float)):
            quality["source_card"] = float(stored[key])  # what the source's card says: the same code, same split
    else:
        quality = {"measured": False, "note": "quality was not measured: give --data (the model's own data) to "
                                              "measure the change in nats per character or token"}
    return {
        "quantized_from": {"id": info.id, "fingerprint": model_fingerprint(info)},
        "quantization": {
            "bits": bits,
            "method": method,
            "onnxruntime": ort_version,
            "weight_type": chosen["weight_type"] if bits == 8 else "int4",
            "chosen_because": reason,
            "quantized_ops": chosen["quantized_ops"],
            "gemm_rewritten_as_matmul": chosen["gemm_rewritten_as_matmul"],
            "file_bytes": {"source": sum(f.stat().st_size for f in weight_files(decoder)),
                           "copy": sum(f.stat().st_size for f in weight_files(target))},
            "quality": quality,
            "speed": {"units": "tokens/s", "threads": threads, "repeats": repeats,
                      "measure": f"as chainrule bench text: greedy, batch 1, KV cache, {SPEED_NEW_TOKENS} new tokens "
                                 f"after {SPEED_PROMPT!r}, median of {repeats} rounds, source and copies in turn",
                      "source": source_speed["tokens_per_s"], "copy": chosen["speed"]["tokens_per_s"],
                      "speedup": chosen["speed"]["speedup"],
                      **{k: chosen["speed"][k] for k in ("greedy_same_prefix", "greedy_agreement", "greedy_tokens")}},
            "candidates": [public(c) for c in candidates],
            "command": command,
        },
    }


def _write_card(info: ModelInfo, folder: Path, new_id: str, bits: int, record: dict[str, Any],
                chosen: dict[str, Any], data: str | None, split: str) -> None:
    from engines import atomic

    card = copy.deepcopy(info.card)
    card["id"] = new_id
    word = "int8" if bits == 8 else "int4"
    card["name"] = f"{card.get('name') or info.id} ({word})"
    q = record["quantization"]["quality"]
    change = (f"; {q['metric'].replace('_', ' ')} on {Path(data).name} {split} {q['source']:.4f} -> {q['copy']:.4f} "
              f"({q['relative_change']:+.2%})") if q.get("measured") else ""
    card["description"] = (f"{card.get('description', '').rstrip()} Quantized copy of {info.id}: weights in {word} "
                           f"(ONNX Runtime {'dynamic quantization' if bits == 8 else 'MatMulNBits'}){change}.").strip()
    metrics: dict[str, Any] = {}
    if chosen.get("quality"):
        ev = dict(chosen["quality"]["eval"])
        ev["model"] = new_id
        ev["command"] = f"chainrule eval --model {new_id} --data {data} --split {split} --json"
        metrics[f"{Path(data).stem}/{split}"] = ev
    card["metrics"] = metrics
    card.update(record)
    atomic.write_json(folder / CARD_NAME, card)


# --- the CLI -------------------------------------------------------------------------------

def cmd_quantize(args: argparse.Namespace) -> int:
    """`chainrule quantize --model ID --bits 8|4 [--out DIR] [--data PATH] [--split S] [--json]`."""
    import json
    import shlex

    from engines.registry import get_model

    info = get_model(args.model, args.models_dir)
    weight_types = WEIGHT_TYPES if args.weight_type in (None, "auto") else ({"qint8": "QInt8", "quint8": "QUInt8"}[args.weight_type],)
    if args.weight_type not in (None, "auto") and args.bits != 8:
        raise InputError(f"--weight-type applies to --bits 8 only; leave it out with --bits {args.bits}")
    if args.split is not None and args.data is None:
        raise InputError(f"--split {args.split} picks the part of --data the quality is measured on; give --data too, "
                         "or leave --split out")
    if args.repeats < 1 or args.repeats > 100:
        raise InputError(f"--repeats {args.repeats} is out of range: 1 to 100")
    command = "chainrule " + " ".join(shlex.quote(a) for a in args.argv)
    # what it is doing, on a terminal only: a refusal or failure stays the one line on stderr
    say = (lambda m: print(f"chainrule: {m}", file=sys.stderr, flush=True)) if sys.stderr.isatty() else None
    result = quantize_model(info, args.bits, args.out, data=args.data,
                            split=args.split or "val", command=command, repeats=args.repeats,
                            weight_types=weight_types, log=say)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    q = result["quantization"]
    print(f"wrote {result['model']} to {result['path']} ({q['weight_type']}, {q['file_bytes']['copy']:,} bytes; "
          f"source {q['file_bytes']['source']:,})")
    print(f"weight type: {q['weight_type']}: {q['chosen_because']}")
    if q["quality"]["measured"]:
        qq = q["quality"]
        print(f"quality: {qq['metric']} on {qq['data']} {qq['split']}: {qq['source']:.4f} -> {qq['copy']:.4f} "
              f"({qq['relative_change']:+.3%})")
    else:
        print("quality: not measured (give --data to measure it)")
    s = q["speed"]
    print(f"speed: {s['source']} -> {s['copy']} tokens/s ({s['speedup']}x, {s['threads']} thread); greedy tokens: "
          f"first {s['greedy_same_prefix']} of {s['greedy_tokens']} identical, {s['greedy_agreement']:.0%} equal")
    return 0
