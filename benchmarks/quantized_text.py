"""tokens/s of the shipped GPTs in float32, int8 and int4, side by side, at 1 and 2 threads.

    python benchmarks/quantized_text.py [--models shakespeare-char,gutenberg-bpe] [--threads 1,2] [--repeats 5] [--json]

For each model: the float32 model as shipped; its int8 copy (the shipped `<id>-int8` when it is
installed, else made into a temporary folder exactly as `chainrule quantize --bits 8` makes it);
its int4 copy (MatMulNBits, blocks of 32, made into a temporary folder). The three are measured as
`chainrule bench text` measures (greedy, batch 1, KV cache, 256 new tokens after 'ROMEO:\\n'),
taking turns in one process (round-robin, first round not counted) so machine load hits each alike;
the median of the rounds is printed, with how many of the 256 greedy tokens agree with float32.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.registry import ModelInfo, get_model, read_card  # noqa: E402
from engines.text.quantize import (SPEED_NEW_TOKENS, _copy_folder, _external_files, _onnx, agreement,  # noqa: E402
                                   measure_speed, quantize_graph)


def make_copy(info: ModelInfo, bits: int, root: Path, weight_type: str = "QInt8") -> ModelInfo:
    """A quantized copy of `info` in `root` (the folder and card as the source's; the graph quantized)."""
    folder = root / f"{info.id}-int{bits}"
    decoder = info.file("decoder")
    rel = decoder.relative_to(info.path).as_posix()
    _copy_folder(info.path, folder, {rel, *_external_files(_onnx(), decoder)})
    quantize_graph(decoder, folder / rel, bits, weight_type)
    copy = read_card(folder)
    assert copy is not None and copy.usable, copy and copy.problem
    return copy


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="shakespeare-char,gutenberg-bpe")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="chainrule-quantized-bench-"))
    rows = []
    try:
        for model_id in args.models.split(","):
            source = get_model(model_id, kind="text")
            try:
                int8 = get_model(f"{model_id}-int8", kind="text")
                int8_from = "installed"
            except Exception:  # noqa: BLE001 - not installed: made here the same way
                int8, int8_from = make_copy(source, 8, root), "made here (QInt8)"
            int4 = make_copy(source, 4, root)
            for threads in (int(t) for t in args.threads.split(",")):
                fp, i8, i4 = measure_speed([source, int8, int4], threads=threads, repeats=args.repeats)
                for name, r, size_of in (("float32", fp, source), ("int8", i8, int8), ("int4", i4, int4)):
                    rows.append({"model": model_id, "precision": name, "threads": threads,
                                 "tokens_per_s": r["tokens_per_s"], "over_float32": round(r["tokens_per_s"] / fp["tokens_per_s"], 2),
                                 "graph_bytes": size_of.file("decoder").stat().st_size,
                                 **({"int8_copy": int8_from} if name == "int8" else {}),
                                 **{k: v for k, v in agreement(fp["tokens"], r["tokens"]).items()
                                    if k != "greedy_tokens"}})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, load average "
               f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
    if args.json:
        print(json.dumps({"new_tokens": SPEED_NEW_TOKENS, "repeats": args.repeats, "machine": machine, "rows": rows},
                         indent=2))
        return 0
    print(f"tokens/s, greedy, batch 1, {SPEED_NEW_TOKENS} new tokens, median of {args.repeats} round-robin rounds; "
          f"{machine}")
    print(f"{'model':<18} {'precision':<9} {'threads':>7} {'tokens/s':>9} {'x fp32':>7} {'graph MB':>9}  greedy = fp32")
    for r in rows:
        print(f"{r['model']:<18} {r['precision']:<9} {r['threads']:>7} {r['tokens_per_s']:>9.1f} {r['over_float32']:>7.2f} "
              f"{r['graph_bytes'] / 1e6:>9.2f}  first {r['greedy_same_prefix']}/{SPEED_NEW_TOKENS}, "
              f"{r['greedy_agreement']:.0%} of positions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
