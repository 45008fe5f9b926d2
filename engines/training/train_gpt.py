"""Train a GPT (``engines.training.gpt``) on text: characters or byte-level BPE tokens.

Run as::

    python -m engines.training.train_gpt --data PATH --out DIR [options]

Two tokenizers:

* ``--tokenizer char`` (default): ``--data`` is one UTF-8 text file; the vocabulary is its
  character set; train / validation = first 90% / last 10% of the file.
* ``--tokenizer bpe``: ``--data`` is a folder of ``.txt`` documents (or one file); a
  byte-level BPE of ``--vocab-size`` tokens is trained on the training parts and saved as
  ``DIR/tokenizer.json``; every document is split 90/10 so validation covers all of them
  (see ``engines.training.bpe_data``).

Every ``eval_interval`` iterations the model is evaluated on fixed, seeded
batches of the train and validation splits; the loss (nats/token, and bits/char
through the split's characters-per-token ratio) is printed and appended to
``DIR/log.jsonl``. The best model by validation loss is saved to ``DIR/ckpt.pt``;
the latest state (model, optimizer, RNG, iteration) to ``DIR/last.pt`` so
``--resume`` can continue. ``--time-limit-minutes`` stops the run cleanly.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

import torch

from engines.training.gpt import GPT, GPTConfig
from engines.training.text_data import CharDataset, fixed_batches, get_batch
from engines.training.run_files import append_log, save_checkpoint

DEFAULTS = dict(
    n_layer=4, n_head=4, n_embd=192, block_size=128, dropout=0.0, bias=True,
    max_iters=5000, batch_size=32, lr=2e-3, min_lr=1e-4, warmup_iters=100,
    weight_decay=0.1, grad_clip=1.0, eval_interval=250, eval_iters=20,
    seed=1337, time_limit_minutes=60.0, threads=2, tokenizer="char", vocab_size=2048,
)
TOKENIZERS = ("char", "bpe")
TOKENIZER_FILE = "tokenizer.json"


def default_command() -> str:
    """The command line of this process, as a user would type it."""
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if prog in ("train_gpt.py", "__main__.py", "-c", ""):
        prog = "python -m engines.training.train_gpt"
    return " ".join([prog] + [shlex.quote(a) for a in sys.argv[1:]])


def lr_at(it: int, lr: float, min_lr: float, warmup_iters: int, max_iters: int) -> float:
    """Linear warmup, then cosine decay from ``lr`` to ``min_lr`` at ``max_iters``."""
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    if it >= max_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, max_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return min_lr + coeff * (lr - min_lr)


@torch.no_grad()
def evaluate(model: GPT, batches) -> float:
    was_training = model.training
    model.eval()
    losses = [model(x, y)[1].item() for x, y in batches]
    model.train(was_training)
    return sum(losses) / len(losses)


def train(data_path, out_dir, *, n_layer=DEFAULTS["n_layer"], n_head=DEFAULTS["n_head"],
          n_embd=DEFAULTS["n_embd"], block_size=DEFAULTS["block_size"],
          dropout=DEFAULTS["dropout"], bias=DEFAULTS["bias"],
          max_iters=DEFAULTS["max_iters"], batch_size=DEFAULTS["batch_size"],
          lr=DEFAULTS["lr"], min_lr=DEFAULTS["min_lr"], warmup_iters=DEFAULTS["warmup_iters"],
          weight_decay=DEFAULTS["weight_decay"], grad_clip=DEFAULTS["grad_clip"],
          eval_interval=DEFAULTS["eval_interval"], eval_iters=DEFAULTS["eval_iters"],
          seed=DEFAULTS["seed"], time_limit_minutes=DEFAULTS["time_limit_minutes"],
          threads=DEFAULTS["threads"], tokenizer=DEFAULTS["tokenizer"],
          vocab_size=DEFAULTS["vocab_size"], resume=False, command=None) -> dict:
    """Train and return a summary dict (best val loss, iterations, paths)."""
    t_start = time.time()
    torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.jsonl"
    command = command or default_command()
    hparams = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                   dropout=dropout, bias=bias, max_iters=max_iters, batch_size=batch_size,
                   lr=lr, min_lr=min_lr, warmup_iters=warmup_iters, weight_decay=weight_decay,
                   grad_clip=grad_clip, eval_interval=eval_interval, eval_iters=eval_iters,
                   seed=seed, time_limit_minutes=time_limit_minutes, threads=threads,
                   tokenizer=tokenizer)
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer {tokenizer!r} is not one of {', '.join(TOKENIZERS)}")

    last_path, best_path = out / "last.pt", out / "ckpt.pt"
    if tokenizer == "char":
        data = CharDataset.from_file(data_path)
        n_vocab = len(data.vocab)
        tok_record = {"type": "char"}
        train_cpt = val_cpt = 1.0  # characters per token
    else:
        from engines.training.bpe_data import BPEDataset

        hparams["vocab_size"] = vocab_size
        # a resumed run keeps the tokenizer its checkpoints were trained with
        tok_path = out / TOKENIZER_FILE
        data = BPEDataset.build(data_path, tok_path, vocab_size,
                                train_tokenizer=not (resume and tok_path.is_file()))
        n_vocab = data.vocab_size
        tok_record = {"type": "bpe", "file": TOKENIZER_FILE, "path": str(tok_path.resolve()),
                      "vocab_size": n_vocab, "json": tok_path.read_text(encoding="utf-8"),
                      "documents": data.documents, "train_chars": data.train_chars,
                      "val_chars": data.val_chars, "train_tokens": len(data.train),
                      "val_tokens": len(data.val)}
        train_cpt, val_cpt = data.train_chars_per_token, data.val_chars_per_token
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=n_vocab, block_size=block_size, n_layer=n_layer,
                       n_head=n_head, n_embd=n_embd, dropout=dropout, bias=bias)
    model = GPT(config)
    optimizer = model.configure_optimizers(weight_decay, lr)
    gen = torch.Generator().manual_seed(seed)
    start_iter, best_val = 0, float("inf")

    if resume:
        src = last_path if last_path.exists() else best_path
        if not src.exists():
            raise FileNotFoundError(f"--resume: no checkpoint in {out}")
        ck = torch.load(src, map_location="cpu", weights_only=True)
        ck_tokenizer = (ck.get("tokenizer") or {"type": "char"})["type"]
        if ck_tokenizer != tokenizer:
            raise ValueError(f"--resume: {src} was trained with the {ck_tokenizer} tokenizer, not {tokenizer}")
        config = GPTConfig(**ck["config"])
        model = GPT(config)
        model.load_state_dict(ck["model"])
        optimizer = model.configure_optimizers(weight_decay, lr)
        if "optimizer" in ck:
            optimizer.load_state_dict(ck["optimizer"])
        if "generator" in ck:
            gen.set_state(ck["generator"])
        start_iter = ck["iter"] + 1
        best_val = ck.get("best_val", float("inf"))
        block_size = config.block_size

    n_params = model.num_parameters()
    append_log(log_path, {"event": "start", "command": command, "resume": resume,
                           "start_iter": start_iter, "hparams": hparams,
                           "config": config.to_dict(), "parameters": n_params,
                           "train_tokens": len(data.train), "val_tokens": len(data.val),
                           "tokenizer": tokenizer, "train_chars_per_token": round(train_cpt, 4),
                           "val_chars_per_token": round(val_cpt, 4),
                           "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    print(f"command: {command}", flush=True)
    print(f"config: {config.to_dict()}  parameters: {n_params:,}", flush=True)
    if tokenizer == "bpe":
        print(f"tokenizer: byte-level BPE, {n_vocab} tokens ({tok_path}); train {len(data.train):,} tokens "
              f"({train_cpt:.3f} chars/token), val {len(data.val):,} tokens ({val_cpt:.3f} chars/token)", flush=True)

    # fixed evaluation windows: the same every eval (and across resumes)
    val_batches = fixed_batches(data.val, eval_iters, batch_size, block_size, seed + 1)
    train_batches = fixed_batches(data.train, eval_iters, batch_size, block_size, seed + 2)

    def state(it):
        return {"model": model.state_dict(), "config": config.to_dict(),
                "vocab": data.vocab if tokenizer == "char" else None, "tokenizer": tok_record,
                "iter": it, "best_val": best_val, "hparams": hparams, "command": command,
                "data_path": str(data_path), "parameters": n_params}

    model.train()
    it = start_iter
    t_iter = time.time()
    stopped = "max_iters"
    last_train_loss = float("nan")
    while it < max_iters:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(it, lr, min_lr, warmup_iters, max_iters)
        x, y = get_batch(data.train, batch_size, block_size, gen)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        last_train_loss = loss.item()

        out_of_time = (time.time() - t_start) > time_limit_minutes * 60
        is_last = it == max_iters - 1 or out_of_time
        if (it + 1) % eval_interval == 0 or is_last:
            val = evaluate(model, val_batches)
            trn = evaluate(model, train_batches)
            elapsed = time.time() - t_start
            sec_per_iter = (time.time() - t_iter) / max(1, it + 1 - start_iter)
            improved = val < best_val
            if improved:
                best_val = val
                save_checkpoint(state(it), best_path)
            ck = state(it)
            ck["optimizer"] = optimizer.state_dict()
            ck["generator"] = gen.get_state()
            save_checkpoint(ck, last_path)
            rec = {"event": "eval", "iter": it + 1, "train_loss": round(trn, 4),
                   "val_loss": round(val, 4), "best_val": round(best_val, 4),
                   "train_bpc": round(trn / math.log(2) / train_cpt, 4),
                   "val_bpc": round(val / math.log(2) / val_cpt, 4),
                   "batch_loss": round(last_train_loss, 4), "lr": optimizer.param_groups[0]["lr"],
                   "elapsed_s": round(elapsed, 1), "s_per_iter": round(sec_per_iter, 4),
                   "saved_best": improved}
            append_log(log_path, rec)
            print(f"iter {it + 1}: train {trn:.4f}  val {val:.4f}  best {best_val:.4f} nats/token  "
                  f"(val {rec['val_bpc']:.4f} bits/char)  lr {rec['lr']:.2e}  {sec_per_iter:.3f} s/iter  {elapsed / 60:.1f} min", flush=True)
        if out_of_time:
            stopped = "time_limit"
            break
        it += 1

    summary = {"event": "end", "stopped": stopped, "iters": it + 1 if stopped == "time_limit" else it,
               "best_val": best_val, "elapsed_s": round(time.time() - t_start, 1),
               "ckpt": str(best_path)}
    append_log(log_path, summary)
    print(f"done ({stopped}): best val {best_val:.4f}; checkpoint {best_path}", flush=True)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = DEFAULTS
    parser.add_argument("--data", required=True,
                        help="char: a UTF-8 text file; bpe: a folder of .txt documents (or one file)")
    parser.add_argument("--out", required=True, help="output dir: ckpt.pt, last.pt, log.jsonl")
    parser.add_argument("--tokenizer", choices=TOKENIZERS, default=d["tokenizer"],
                        help="char: one token per character; bpe: byte-level BPE trained on --data")
    parser.add_argument("--vocab-size", type=int, default=d["vocab_size"],
                        help="bpe: tokens in the vocabulary (256 bytes + <|endoftext|> + merges)")
    parser.add_argument("--n-layer", type=int, default=d["n_layer"])
    parser.add_argument("--n-head", type=int, default=d["n_head"])
    parser.add_argument("--n-embd", type=int, default=d["n_embd"])
    parser.add_argument("--block-size", type=int, default=d["block_size"])
    parser.add_argument("--dropout", type=float, default=d["dropout"])
    parser.add_argument("--no-bias", dest="bias", action="store_false", default=d["bias"])
    parser.add_argument("--max-iters", type=int, default=d["max_iters"])
    parser.add_argument("--batch-size", type=int, default=d["batch_size"])
    parser.add_argument("--lr", type=float, default=d["lr"])
    parser.add_argument("--min-lr", type=float, default=d["min_lr"])
    parser.add_argument("--warmup-iters", type=int, default=d["warmup_iters"])
    parser.add_argument("--weight-decay", type=float, default=d["weight_decay"])
    parser.add_argument("--grad-clip", type=float, default=d["grad_clip"])
    parser.add_argument("--eval-interval", type=int, default=d["eval_interval"])
    parser.add_argument("--eval-iters", type=int, default=d["eval_iters"])
    parser.add_argument("--seed", type=int, default=d["seed"])
    parser.add_argument("--time-limit-minutes", type=float, default=d["time_limit_minutes"])
    parser.add_argument("--threads", type=int, default=d["threads"])
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    return parser


def run(args: argparse.Namespace, command: str | None = None) -> dict:
    return train(args.data, args.out, n_layer=args.n_layer, n_head=args.n_head,
                 n_embd=args.n_embd, block_size=args.block_size, dropout=args.dropout,
                 bias=args.bias, max_iters=args.max_iters, batch_size=args.batch_size,
                 lr=args.lr, min_lr=args.min_lr, warmup_iters=args.warmup_iters,
                 weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                 eval_interval=args.eval_interval, eval_iters=args.eval_iters,
                 seed=args.seed, time_limit_minutes=args.time_limit_minutes,
                 threads=args.threads, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                 resume=args.resume, command=command)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = add_arguments(argparse.ArgumentParser(prog="python -m engines.training.train_gpt",
                                                   description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    command = " ".join(shlex.quote(a) for a in ["python", "-m", "engines.training.train_gpt"] + argv)
    run(args, command=command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
