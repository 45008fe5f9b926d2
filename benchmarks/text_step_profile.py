"""Where one generation step's time goes: this project's token loop against a bare ONNX Runtime loop
on the same Optimum GPT-2 export.

    python benchmarks/text_step_profile.py [--model-dir /tmp/text_peers/small/onnx] [--threads 1]
        [--tokens 256] [--repeats 5] [--views lazy|read|off]

(the folder is the one `benchmarks/text_peers.py` exports; any Optimum GPT-2 export works).

1. Timing, no profiler: the two loops alternate `--repeats` times (round robin), greedy, batch 1, a
   32-token prompt; ms per token is the median. `--views`: `lazy` = stream_tokens with 10
   alternatives whose views nobody reads (the CLI, the benchmark); `read` = every view read on
   every token (the Text tab: alternatives before/after, rank, entropy); `off` = n_alternatives 0.
2. cProfile of the project's loop: per token, the time inside `InferenceSession.run` and the rest,
   and the functions that cost the most outside it.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("CHAINRULE_PROVIDER", "cpu")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from engines.decoding.config import DecodingConfig  # noqa: E402
from engines.text.model import load_text_model, recognise_optimum_folder  # noqa: E402
from engines.text.session import stream_tokens  # noqa: E402


class TimedRun:
    """Wraps an ort.InferenceSession: `run` adds its wall time to `seconds` (perf_counter, ~1 us
    of its own), so a loop's time splits into ONNX Runtime's run and everything else."""

    def __init__(self, session):
        self._s = session
        self.seconds = 0.0
        self.calls = 0

    def run(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self._s.run(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1

    def __getattr__(self, name):
        return getattr(self._s, name)


def bare_loop(path: Path, threads: int):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = TimedRun(ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]))
    outs = [o.name for o in sess.get_outputs()]
    pasts = [n.replace("present", "past_key_values") for n in outs[1:]]
    shape = sess.get_inputs()[3].shape if len(sess.get_inputs()) > 3 else None
    past_in = {i.name: i for i in sess.get_inputs() if i.name.startswith("past_key_values")}
    heads, head_dim = past_in[pasts[0]].shape[1], past_in[pasts[0]].shape[3]
    del shape
    ones = np.ones((1, 4096), np.int64)

    def run(prompt, new):
        t = len(prompt)
        feeds = {"input_ids": np.asarray([prompt], np.int64), "attention_mask": ones[:, :t],
                 "position_ids": np.arange(t, dtype=np.int64)[None]}
        feeds.update({n: np.zeros((1, heads, 0, head_dim), np.float32) for n in pasts})
        out = []
        for _ in range(new):
            res = sess.run(outs, feeds)
            tok = int(res[0][0, -1].argmax())
            out.append(tok)
            feeds = dict(zip(pasts, res[1:]))
            feeds["input_ids"] = np.array([[tok]], np.int64)
            feeds["attention_mask"] = ones[:, :t + 1]
            feeds["position_ids"] = np.array([[t]], np.int64)
            t += 1
        return out
    run.timed = sess
    return run


def project_loop(folder: Path, threads: int, views: str):
    info = recognise_optimum_folder(folder, "profile")
    if info is None or info.problem:
        raise SystemExit(f"{folder}: not a usable Optimum folder ({info and info.problem})")
    model = load_text_model(info, threads=threads)
    guarded = model.decoder.session.session  # engines.runtime.GuardedSession around the ORT session
    guarded._session = timed = TimedRun(guarded._session)
    config = DecodingConfig(strategy="greedy")
    n_alt = 0 if views == "off" else 10

    def run(prompt, new):
        out = []
        for ev in stream_tokens(model, prompt, config, new, seed=0, n_alternatives=n_alt):
            if views == "read":
                _ = (ev.top_before, ev.top_after, ev.rank, ev.entropy)
            out.append(ev.token_id)
        return out
    run.timed = timed
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default="/tmp/text_peers/small/onnx")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--views", default="lazy", choices=["lazy", "read", "off"])
    args = ap.parse_args()
    folder = Path(args.model_dir)
    prompt = np.random.default_rng(0).integers(0, 50000, 32).tolist()
    loops = {"bare ORT": bare_loop(folder / "model.onnx", args.threads),
             f"project (views {args.views})": project_loop(folder, args.threads, args.views)}
    for fn in loops.values():
        fn(prompt, 8)
    times = {n: [] for n in loops}
    toks = {}
    for rep in range(args.repeats):
        for n in (list(loops) if rep % 2 == 0 else list(loops)[::-1]):
            t0 = time.perf_counter()
            toks[n] = loops[n](prompt, args.tokens)
            times[n].append(time.perf_counter() - t0)
    print(f"{args.tokens} tokens, 32-token prompt, {args.threads} thread(s), {args.repeats} round-robin repeats, "
          f"onnxruntime {ort.__version__}; load {os.getloadavg()[0]:.2f}")
    ms = {n: 1000 * statistics.median(t) / args.tokens for n, t in times.items()}
    base = ms["bare ORT"]
    for n, v in ms.items():
        print(f"  {n:28s} {v:7.3f} ms/token  {1000 / v:7.1f} tokens/s  {100 * (v / base - 1):+6.1f}% vs bare"
              f"  runs {[round(t, 3) for t in times[n]]}")
    same = len({tuple(t) for t in toks.values()}) == 1
    print(f"  identical tokens: {same}")
    # the same loops once more, each ORT run timed: what each loop spends outside ONNX Runtime per token
    print("split (one more run each, perf_counter around every InferenceSession.run):")
    outside = {}
    for n, fn in loops.items():
        fn.timed.seconds, fn.timed.calls = 0.0, 0
        t0 = time.perf_counter()
        fn(prompt, args.tokens)
        total = time.perf_counter() - t0
        in_run = fn.timed.seconds
        outside[n] = (total - in_run) / args.tokens
        print(f"  {n:28s} {1000 * total / args.tokens:7.3f} ms/token: ORT run {1000 * in_run / args.tokens:7.3f} ms, "
              f"outside it {1e6 * outside[n]:6.0f} us ({100 * (total - in_run) / in_run:4.1f}% of the run time; "
              f"{fn.timed.calls} runs)")
    extra = outside[list(loops)[1]] - outside["bare ORT"]
    print(f"  the engine's own cost per token beyond the bare loop's: {1e6 * extra:.0f} us "
          f"({100 * extra / (loops['bare ORT'].timed.seconds / args.tokens):.1f}% of the bare loop's ORT time per token)")

    proj = loops[f"project (views {args.views})"]
    prof = cProfile.Profile()
    prof.enable()
    proj(prompt, args.tokens)
    prof.disable()
    st = pstats.Stats(prof)
    total = sum(v[2] for v in st.stats.values())  # tottime over all functions
    is_run = lambda k: "onnxruntime_pybind11_state" in k[2] and "run" in k[2]  # noqa: E731 (its name varies by version)
    run_t = sum(v[2] for k, v in st.stats.items() if is_run(k))
    print(f"cProfile of the project loop ({args.tokens} tokens; the profiler inflates Python time):")
    print(f"  per token: {1000 * total / args.tokens:.3f} ms, of which ORT run {1000 * run_t / args.tokens:.3f} ms "
          f"({100 * run_t / total:.1f}%), the rest {1e6 * (total - run_t) / args.tokens:.0f} us")
    rows = sorted(((v[2], k) for k, v in st.stats.items()), reverse=True)
    print("  top functions outside the run (tottime per token, us):")
    shown = 0
    for tt, k in rows:
        if is_run(k):
            continue
        print(f"    {1e6 * tt / args.tokens:8.1f}  {Path(k[0]).name}:{k[1]} {k[2]}")
        shown += 1
        if shown == 15:
            break


if __name__ == "__main__":
    main()
