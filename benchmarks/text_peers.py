"""Peer benchmark for text generation on the CPU: this project against the engines people use.

One command (in an environment with the `bench` extra; onnxruntime-genai needs the CPU build of
onnxruntime, so it cannot share the project's onnxruntime-gpu venv):

    python benchmarks/text_peers.py [--sizes small,gpt2] [--threads 1,2] [--repeats 3]
        [--work /tmp/text_peers] [--json out.json] [--project-venv .venv/bin/python]

Same weights on every engine: a random-weight GPT-2 (torch.manual_seed(0), GPT-2's 50,257-entry
vocabulary, a synthetic byte-level BPE tokenizer of that size built here) saved once with
transformers and exported once by optimum-onnx ("text-generation-with-past"). The ONNX peers read
that one file:
- `project`: this project through its Optimum folder support (`recognise_optimum_folder`,
  `load_text_model`, `stream_tokens` with the probability views on: 10 alternatives per token,
  rank and entropy, computed when asked), in this process (the CPU onnxruntime of this venv);
- `project_venv`: the same code in a subprocess running `--project-venv`'s python (the project's
  own venv: onnxruntime-gpu's CPU provider), driven in the same round-robin;
- `ort_loop`: a bare ONNX Runtime loop (numpy feeds, presents fed back as the next pasts, argmax);
- `optimum`: Optimum's ORTModelForCausalLM.generate;
- `genai`: onnxruntime-genai over the same model.onnx through a hand-written genai_config.json
  (its model builder has no GPT-2 builder, so it cannot build one from the HF weights);
- `transformers`: the HF weights in torch (eager, with its cache);
- `ct2_f32`, `ct2_int8`: CTranslate2 converted from the same HF weights.
Greedy, batch 1, a 32-token prompt, 256 new tokens; every engine is asked for exactly 256 (no
end-of-text stop: transformers/CTranslate2 get min-new-tokens, the others have no eos). Round
robin: each repeat runs every engine once, in a rotated order, so load and order hit all alike;
the figure is the median. tokens/s = 256 / (prompt + 256 steps), wall clock. Time to first token:
a 512-token prompt, one new token, median of the repeats. The float32 engines' tokens are compared
(identical-token check); int8 is reported separately. Machine load (uptime) at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CHAINRULE_PROVIDER", "cpu")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

SIZES = {  # name: (n_layer, n_embd, n_head)
    "small": (6, 512, 8),
    "gpt2": (12, 768, 12),
}
VOCAB = 50257
N_POSITIONS = 1024
PROMPT_LEN = 32
NEW = 256
TTFT_PROMPT = 512
FLOAT32 = ("project", "project_venv", "ort_loop", "optimum", "genai", "transformers", "ct2_f32")


# --- building the one model ----------------------------------------------------------------

def _tokenizer(folder: Path) -> None:
    """A byte-level BPE tokenizer with exactly VOCAB entries (256 bytes + merges + <|endoftext|>),
    built deterministically: the benchmark feeds token ids, the engines only need it to load."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2TokenizerFast

    from engines.text.tokenizer import _byte_decoder

    symbols = sorted(_byte_decoder(), key=lambda s: _byte_decoder()[s])
    vocab = {s: i for i, s in enumerate(symbols)}
    merges: list[tuple[str, str]] = []
    rng = random.Random(0)
    toks = list(symbols)
    while len(vocab) < VOCAB - 1:
        a, b = rng.choice(toks), rng.choice(toks)
        if len(a) + len(b) > 8 or a + b in vocab:
            continue
        merges.append((a, b))
        vocab[a + b] = len(vocab)
        toks.append(a + b)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    assert tok.get_vocab_size() == VOCAB
    GPT2TokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                      unk_token="<|endoftext|>").save_pretrained(folder)


def build(size: str, work: Path) -> dict:
    """HF weights (hf/), Optimum export (onnx/), genai folders (genai-{t}/), CTranslate2 (ct2-*/)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    n_layer, n_embd, n_head = SIZES[size]
    base = work / size
    hf, onnx_dir = base / "hf", base / "onnx"
    if not (onnx_dir / "model.onnx").is_file():
        shutil.rmtree(base, ignore_errors=True)
        hf.mkdir(parents=True)
        torch.manual_seed(0)
        cfg = GPT2Config(vocab_size=VOCAB, n_positions=N_POSITIONS, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                         bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
        model = GPT2LMHeadModel(cfg).eval()
        model.save_pretrained(hf)
        _tokenizer(hf)
        from optimum.exporters.onnx import main_export

        main_export(str(hf), output=str(onnx_dir), task="text-generation-with-past", device="cpu")
        # no end-of-text for the project: every engine generates exactly NEW tokens
        tc = json.loads((onnx_dir / "tokenizer_config.json").read_text())
        tc.pop("eos_token", None)
        (onnx_dir / "tokenizer_config.json").write_text(json.dumps(tc, indent=1))
        import ctranslate2

        for q in ("float32", "int8"):
            ctranslate2.converters.TransformersConverter(str(hf)).convert(str(base / f"ct2-{q}"), quantization=q)
    params = sum(int(np.prod(p.shape)) for p in GPT2LMHeadModel.from_pretrained(hf).parameters())
    return {"size": size, "n_layer": n_layer, "n_embd": n_embd, "n_head": n_head, "vocab": VOCAB,
            "parameters": params, "non_embedding_parameters": params - VOCAB * n_embd - N_POSITIONS * n_embd,
            "hf": hf, "onnx": onnx_dir, "base": base}


def int8_folder(info: dict) -> Path:
    """The Optimum folder quantized the way `chainrule quantize --bits 8 --weight-type qint8` does it
    (engines.text.quantize.quantize_graph: Gemm -> MatMul, ONNX Runtime's dynamic int8, per-channel)."""
    from engines.text.quantize import quantize_graph

    target = info["base"] / "onnx-int8"
    if not (target / "model.onnx").is_file():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(info["onnx"], target, ignore=shutil.ignore_patterns("model.onnx*"))
        quantize_graph(info["onnx"] / "model.onnx", target / "model.onnx", 8, "QInt8")
    return target


def genai_folder(info: dict, threads: int, model_type: str) -> Path:
    d = info["base"] / f"genai-{model_type}-{threads}"
    d.mkdir(exist_ok=True)
    target = d / "model.onnx"
    if not target.exists():
        target.symlink_to(info["onnx"] / "model.onnx")
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"):
        if (info["onnx"] / f).is_file() and not (d / f).exists():
            shutil.copy(info["onnx"] / f, d / f)
    head = info["n_embd"] // info["n_head"]
    cfg = {
        "model": {
            "bos_token_id": VOCAB - 1, "eos_token_id": VOCAB - 1, "pad_token_id": VOCAB - 1,
            "context_length": N_POSITIONS, "vocab_size": VOCAB, "type": model_type,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "intra_op_num_threads": threads,
                                    "inter_op_num_threads": 1, "provider_options": []},
                "filename": "model.onnx", "head_size": head, "hidden_size": info["n_embd"],
                "num_attention_heads": info["n_head"], "num_key_value_heads": info["n_head"],
                "num_hidden_layers": info["n_layer"],
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
                           "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {"do_sample": False, "num_beams": 1, "max_length": N_POSITIONS, "min_length": 0,
                   "past_present_share_buffer": False, "top_k": 1, "temperature": 1.0},
    }
    (d / "genai_config.json").write_text(json.dumps(cfg, indent=1))
    return d


# --- the engines: each is (load(threads) -> run(prompt, new) -> tokens) ----------------------

def project_engine(onnx_dir: Path, threads: int):
    from engines.decoding.config import DecodingConfig
    from engines.text.model import load_text_model, recognise_optimum_folder
    from engines.text.session import stream_tokens

    info = recognise_optimum_folder(onnx_dir, "bench")
    assert info is not None and not info.problem, info and info.problem
    model = load_text_model(info, threads=threads)
    config = DecodingConfig(strategy="greedy")

    def run(prompt, new):
        return [ev.token_id for ev in stream_tokens(model, prompt, config, new, seed=0, n_alternatives=10)]
    return run


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_loop_engine(onnx_dir: Path, threads: int, n_layer: int, n_head: int, head: int):
    sess = ort_session(onnx_dir / "model.onnx", threads)
    outs_names = [o.name for o in sess.get_outputs()]
    past_names = [n.replace("present", "past_key_values") for n in outs_names[1:]]
    ones = np.ones((1, N_POSITIONS), np.int64)
    empty = np.zeros((1, n_head, 0, head), np.float32)

    def run(prompt, new):
        t = len(prompt)
        feeds = {"input_ids": np.asarray([prompt], np.int64), "attention_mask": ones[:, :t],
                 "position_ids": np.arange(t, dtype=np.int64)[None]}
        feeds.update({n: empty for n in past_names})
        out = []
        for _ in range(new):
            res = sess.run(outs_names, feeds)
            tok = int(res[0][0, -1].argmax())
            out.append(tok)
            feeds = dict(zip(past_names, res[1:]))
            feeds["input_ids"] = np.array([[tok]], np.int64)
            feeds["attention_mask"] = ones[:, :t + 1]
            feeds["position_ids"] = np.array([[t]], np.int64)
            t += 1
        return out
    return run


def optimum_engine(onnx_dir: Path, threads: int):
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    model = ORTModelForCausalLM.from_pretrained(onnx_dir, session_options=so, provider="CPUExecutionProvider",
                                                use_cache=True)
    model.generation_config.eos_token_id = None

    def run(prompt, new):
        ids = torch.tensor([prompt])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, pad_token_id=0)
        return out[0, len(prompt):].tolist()
    return run


def transformers_engine(hf_dir: Path, threads: int):
    import torch
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    model.generation_config.eos_token_id = None

    def run(prompt, new):
        torch.set_num_threads(threads)
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, pad_token_id=0)
        return out[0, len(prompt):].tolist()
    return run


def ct2_engine(folder: Path, threads: int):
    import ctranslate2

    gen = ctranslate2.Generator(str(folder), device="cpu", intra_threads=threads, inter_threads=1)
    vocab = json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))  # CTranslate2 takes token strings

    def run(prompt, new):
        res = gen.generate_batch([[vocab[i] for i in prompt]], max_length=new, min_length=new, sampling_topk=1,
                                 include_prompt_in_result=False)
        return list(res[0].sequences_ids[0])
    return run


def genai_engine(info: dict, threads: int):
    import onnxruntime_genai as og

    errors = []
    for model_type in ("gpt2", "llama"):
        try:
            model = og.Model(str(genai_folder(info, threads, model_type)))

            def run(prompt, new, model=model):
                params = og.GeneratorParams(model)
                params.set_search_options(do_sample=False, max_length=len(prompt) + new, min_length=len(prompt) + new,
                                          batch_size=1)
                g = og.Generator(model, params)
                g.append_tokens(np.asarray([prompt], np.int32))
                out: list[int] = []
                while len(out) < new and not g.is_done():
                    g.generate_next_token()
                    out.append(int(g.get_next_tokens()[0]))
                return out
            run([1, 2, 3], 2)
            run.model_type = model_type  # type: ignore[attr-defined]
            run.refused = errors  # type: ignore[attr-defined]
            return run
        except Exception as exc:  # noqa: BLE001 - report why each type failed
            errors.append(f"{model_type}: {str(exc).splitlines()[0][:200]}")
    raise RuntimeError("; ".join(errors))


class ProjectVenvEngine:
    """This project in another python (the project's own venv), one JSON line per request."""

    def __init__(self, python: str, onnx_dir: Path, threads: int):
        env = dict(os.environ, CHAINRULE_PROVIDER="cpu", PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([python, __file__, "--worker", str(onnx_dir), str(threads)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
        hello = json.loads(self.proc.stdout.readline())
        self.ort_version = hello["onnxruntime"]

    def __call__(self, prompt, new):  # timing is taken by the worker (no pipe latency)
        self.proc.stdin.write(json.dumps({"prompt": list(prompt), "new": new}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        return reply["tokens"], reply["seconds"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def worker(onnx_dir: str, threads: str) -> None:
    import onnxruntime as ort

    run = project_engine(Path(onnx_dir), int(threads))
    print(json.dumps({"onnxruntime": ort.__version__ + " (" + ",".join(ort.get_available_providers()) + ")"}),
          flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        t0 = time.perf_counter()
        toks = run(req["prompt"], req["new"])
        dt = time.perf_counter() - t0
        print(json.dumps({"tokens": toks, "seconds": dt}), flush=True)


# --- the round robin --------------------------------------------------------------------------

def timed(fn, prompt, new):
    t0 = time.perf_counter()
    res = fn(prompt, new)
    if isinstance(res, tuple):  # the subprocess reports its own time
        return res
    return res, time.perf_counter() - t0


def load_engines(info: dict, threads: int, args) -> tuple[dict, dict]:
    n_layer, n_head = info["n_layer"], info["n_head"]
    head = info["n_embd"] // n_head
    makers = {
        "project": lambda: project_engine(info["onnx"], threads),
        "project_venv": (lambda: ProjectVenvEngine(args.project_venv, info["onnx"], threads)) if args.project_venv else None,
        "ort_loop": lambda: ort_loop_engine(info["onnx"], threads, n_layer, n_head, head),
        "optimum": lambda: optimum_engine(info["onnx"], threads),
        "genai": lambda: genai_engine(info, threads),
        "transformers": lambda: transformers_engine(info["hf"], threads),
        "ct2_f32": lambda: ct2_engine(info["base"] / "ct2-float32", threads),
        "ct2_int8": lambda: ct2_engine(info["base"] / "ct2-int8", threads),
        "project_int8": lambda: project_engine(int8_folder(info), threads),
    }
    engines, notes = {}, {}
    for name, make in makers.items():
        if make is None or (args.engines and name not in args.engines):
            continue
        try:
            engines[name] = make()
        except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
            notes[name] = f"not run: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    if "genai" in engines:
        notes["genai"] = (f"genai_config type {engines['genai'].model_type!r} over the Optimum model.onnx"
                          + "".join(f" (type {e})" for e in engines["genai"].refused))
    if "project_venv" in engines:
        notes["project_venv"] = f"subprocess {args.project_venv}, onnxruntime {engines['project_venv'].ort_version}"
    return engines, notes


def bench_size(size: str, args, rng: np.random.Generator) -> dict:
    info = build(size, Path(args.work))
    prompt = rng.integers(0, VOCAB - 1, PROMPT_LEN).tolist()
    long_prompt = rng.integers(0, VOCAB - 1, TTFT_PROMPT).tolist()
    out = {k: v for k, v in info.items() if not isinstance(v, Path)}
    out["by_threads"] = {}
    for threads in args.threads:
        engines, notes = load_engines(info, threads, args)
        names = list(engines)
        for fn in engines.values():  # warm-up: one short run each (first-run allocations)
            timed(fn, prompt, 8)
        times = {n: [] for n in names}
        ttft = {n: [] for n in names}
        tokens = {}
        for rep in range(args.repeats):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for n in order:
                toks, dt = timed(engines[n], prompt, NEW)
                times[n].append(dt)
                tokens[n] = toks
                _, dt1 = timed(engines[n], long_prompt, 1)
                ttft[n].append(dt1)
            print(f"  {size} threads={threads} repeat {rep + 1}/{args.repeats} done", file=sys.stderr, flush=True)
        ref = tokens.get("ort_loop") or next(iter(tokens.values()))
        out["by_threads"][str(threads)] = {
            "tokens_per_s": {n: round(NEW / statistics.median(times[n]), 1) for n in names},
            "runs_s": {n: [round(t, 3) for t in times[n]] for n in names},
            "ttft_ms": {n: round(1000 * statistics.median(ttft[n]), 1) for n in names},
            "n_tokens": {n: len(tokens[n]) for n in names},
            "identical_to_ort_loop": {n: tokens[n] == ref for n in names},
            "notes": notes,
        }
        for fn in engines.values():
            if isinstance(fn, ProjectVenvEngine):
                fn.close()
        del engines
    return out


def versions() -> dict:
    import importlib.metadata as md

    v = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    for p in ("onnxruntime", "onnxruntime-genai", "optimum", "optimum-onnx", "transformers", "torch", "ctranslate2",
              "numpy"):
        try:
            v[p] = md.version(p)
        except md.PackageNotFoundError:
            v[p] = None
    return v


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


COLUMNS = ["project", "project_venv", "ort_loop", "optimum", "genai", "transformers", "ct2_f32", "project_int8",
           "ct2_int8"]
TITLES = {"project_int8": "this project int8 (`chainrule quantize --bits 8`)", "project": "this project (ORT CPU)", "project_venv": "this project (.venv, ORT-gpu CPU EP)",
          "ort_loop": "bare ORT loop", "optimum": "Optimum ORTModel", "genai": "onnxruntime-genai",
          "transformers": "transformers (torch)", "ct2_f32": "CTranslate2 fp32", "ct2_int8": "CTranslate2 int8"}


def markdown(result: dict) -> str:
    cols = [c for c in COLUMNS if any(c in t["tokens_per_s"] for s in result["sizes"] for t in s["by_threads"].values())]
    lines = ["| | " + " | ".join(TITLES[c] for c in cols) + " | same tokens (fp32) |",
             "|---|" + "---|" * (len(cols) + 1)]
    for s in result["sizes"]:
        label = f"{s['n_layer']} x {s['n_embd']} ({s['parameters'] / 1e6:.0f}M)"
        for th, t in s["by_threads"].items():
            same = all(v for n, v in t["identical_to_ort_loop"].items() if n in FLOAT32)
            lines.append(f"| tokens/s, {label}, {th} thread{'s' if th != '1' else ''} | "
                         + " | ".join(str(t["tokens_per_s"].get(c, "-")) for c in cols)
                         + f" | {'yes' if same else 'NO'} |")
        for th, t in s["by_threads"].items():
            lines.append(f"| first token ms, 512-token prompt, {label}, {th} thread{'s' if th != '1' else ''} | "
                         + " | ".join(str(t["ttft_ms"].get(c, "-")) for c in cols) + " | |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="small,gpt2")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default="/tmp/text_peers")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--engines", default="", help="comma-separated subset of: " + ", ".join(COLUMNS) + " (default: all)")
    default_venv = ROOT / ".venv" / "bin" / "python"
    ap.add_argument("--project-venv", default=str(default_venv) if default_venv.is_file() else "",
                    help="python of the project's own venv, run as a subprocess in the same round robin ('' = skip)")
    args = ap.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    args.engines = [e for e in args.engines.split(",") if e]
    result = {"command": " ".join(["python", "benchmarks/text_peers.py", *sys.argv[1:]]), "load_start": uptime(),
              "versions": versions(), "prompt_tokens": PROMPT_LEN, "new_tokens": NEW, "ttft_prompt_tokens": TTFT_PROMPT,
              "repeats": args.repeats, "sizes": []}
    rng = np.random.default_rng(0)
    for size in args.sizes.split(","):
        result["sizes"].append(bench_size(size, args, rng))
    result["load_end"] = uptime()
    text = markdown(result)
    print(text)
    print(f"\nload at start: {result['load_start']}\nload at end:   {result['load_end']}")
    for s in result["sizes"]:
        for th, t in s["by_threads"].items():
            for n, note in t["notes"].items():
                print(f"note ({s['size']}, {th} threads) {n}: {note}")
    print(json.dumps(result, indent=1, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
