"""The training loop of the PixelCNN, WaveNet, NADE and MADE trainers (`fit`), and the checkpoint loading
they share. A family supplies its model, optimizer and a few small functions; the loop does the rest.

Contract of `fit`:

* Schedule: before iteration `it`, progress = max(it / max_iters, trained_s / (time_limit_minutes * 60));
  the run stops when it reaches 1 ("max_iters" when the iteration budget ended it, else "time_limit").
  The learning rate of iteration `it` is `lr_at(it, progress, lr, min_lr, warmup_iters)`.
* Iteration `it`: loss = loss_at(it), backward, gradient norm clipped to grad_clip (when > 0), step.
  loss_at must draw its batch (and any dropout) from generators seeded by (seed, it): the global RNG
  state is not checkpointed.
* trained_s counts the iterations (batch, forward, backward, step) and the periodic evaluations; not the
  setup, the checkpoint writes or the final evaluation.
* After every eval_interval-th iteration and after the last one, evaluate() runs in eval mode; its
  val[best_by] (lower is better) picks the best model. ckpt.pt is written when it improves, last.pt (the
  same plus "optimizer") at every evaluation. Both hold model, iter (the last iteration done), best_val,
  trained_s, hparams, command and the family's `meta` (config, parameters, data, ...).
* Resume: with resume_ck (`load_resume`) the model and optimizer states are restored and the run goes on
  at iteration iter + 1 with the stored best_val and trained_s, so with the same hparams it computes
  exactly what an uninterrupted run would have.
* log.jsonl gets a "start" record (command, resume, start_iter, hparams, meta, start_extra), an "eval"
  record per evaluation (iter, the fields of `report`, lr, times, saved_best) and an "end" record (stopped,
  iters, best_val_<best_by>, times); then, when hp["final_eval"] (default on) and ckpt.pt exists,
  final_eval(ckpt.pt) goes to summary["metrics"].
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engines.errors import InputError
from engines.training.run_files import append_log, save_checkpoint


def lr_at(it: int, progress: float, lr: float, min_lr: float, warmup_iters: int) -> float:
    """Linear warmup over ``warmup_iters``, then cosine from ``lr`` to ``min_lr`` as progress goes 0 -> 1."""
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    p = min(1.0, max(0.0, progress))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * p)) * (lr - min_lr)


def load_checkpoint(path, build: Callable[[dict], torch.nn.Module]) -> tuple[torch.nn.Module, dict]:
    """(build(ck["config"]) with the checkpoint's weights, the checkpoint dict)."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    model = build(ck["config"])
    model.load_state_dict(ck["model"])
    return model, ck


def load_resume(out: Path) -> dict:
    """The checkpoint a ``--resume`` continues from: OUT/last.pt, else OUT/ckpt.pt."""
    src = out / "last.pt" if (out / "last.pt").exists() else out / "ckpt.pt"
    if not src.exists():
        raise InputError(f"--resume: no checkpoint (last.pt or ckpt.pt) in {out}")
    return torch.load(src, map_location="cpu", weights_only=True)


def store_metrics(ck: dict, ckpt_path: Path, metrics: dict, log_path: Path | None, t0: float) -> dict:
    """End of a final evaluation begun at t0: `metrics` go into the checkpoint (for the exporter) and the log."""
    ck["metrics"] = metrics
    save_checkpoint(ck, ckpt_path)
    if log_path is not None:
        append_log(log_path, {"event": "final_eval", **metrics, "eval_s": round(time.time() - t0, 1)})
    return metrics


def fit(*, model: torch.nn.Module, optimizer: torch.optim.Optimizer, out: Path, hp: dict, command: str,
        resume_ck: dict | None, meta: dict, header: str, loss_at: Callable[[int], torch.Tensor],
        evaluate: Callable[[], dict], best_by: str, report: Callable[[int, float, dict, float], tuple[dict, str]],
        best_text: Callable[[float], str], final_eval: Callable[[Path], dict] | None = None,
        start_extra: dict | None = None) -> dict:
    """Train `model` as the module doc says; returns the "end" summary (plus "metrics" after a final eval).

    header: printed after the command line. report(it, mean train loss, val, best_val) -> (the eval
    record's family fields, "epoch" among them; the middle of the printed line). best_text(best_val):
    the best value as the "done" line shows it.
    """
    t_start = time.time()
    log_path, last_path, best_path = out / "log.jsonl", out / "last.pt", out / "ckpt.pt"
    start_iter, best_val, trained_s = 0, float("inf"), 0.0
    if resume_ck is not None:
        model.load_state_dict(resume_ck["model"])
        if "optimizer" in resume_ck:
            optimizer.load_state_dict(resume_ck["optimizer"])
        start_iter = resume_ck["iter"] + 1
        best_val, trained_s = resume_ck.get("best_val", float("inf")), resume_ck.get("trained_s", 0.0)
    append_log(log_path, {"event": "start", "command": command, "resume": resume_ck is not None,
                          "start_iter": start_iter, "hparams": hp, **meta, **(start_extra or {}),
                          "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    print(f"command: {command}\n{header}", flush=True)

    def state(it: int) -> dict:
        return {"model": model.state_dict(), "iter": it, "best_val": best_val, "hparams": hp, "command": command,
                "trained_s": trained_s, **meta}

    model.train()
    it, losses, stopped = start_iter, [], "max_iters"
    t_seg, it_seg = time.time(), it
    limit_s = hp["time_limit_minutes"] * 60
    while True:
        progress = max(it / hp["max_iters"], trained_s / limit_s)
        if progress >= 1.0:
            stopped = "max_iters" if it >= hp["max_iters"] else "time_limit"
            break
        t0 = time.time()
        lr = lr_at(it, progress, hp["lr"], hp["min_lr"], hp["warmup_iters"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = loss_at(it)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if hp["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        optimizer.step()
        losses.append(loss.item())
        trained_s += time.time() - t0
        it += 1
        done = max(it / hp["max_iters"], trained_s / limit_s) >= 1.0
        if it % hp["eval_interval"] == 0 or done:
            t_eval = time.time()
            model.eval()
            val = evaluate()
            model.train()
            trained_s += time.time() - t_eval
            improved = val[best_by] < best_val
            if improved:
                best_val = val[best_by]
                save_checkpoint(state(it - 1), best_path)
            save_checkpoint({**state(it - 1), "optimizer": optimizer.state_dict()}, last_path)
            s_iter = (time.time() - t_seg) / max(1, it - it_seg)
            fields, text = report(it, float(np.mean(losses)), val, best_val)
            append_log(log_path, {"event": "eval", "iter": it, **fields, "lr": lr,
                                  "elapsed_s": round(time.time() - t_start, 1), "trained_s": round(trained_s, 1),
                                  "s_per_iter": round(s_iter, 4), "saved_best": improved})
            print(f"iter {it} (epoch {fields['epoch']:.2f}): {text}  lr {lr:.2e}  {s_iter:.3f} s/iter  "
                  f"{trained_s / 60:.1f} min", flush=True)
            losses, t_seg, it_seg = [], time.time(), it
    summary = {"event": "end", "stopped": stopped, "iters": it, f"best_val_{best_by}": best_val,
               "elapsed_s": round(time.time() - t_start, 1), "trained_s": round(trained_s, 1), "ckpt": str(best_path)}
    append_log(log_path, summary)
    print(f"done ({stopped}) after {it} iterations: best val {best_text(best_val)}", flush=True)
    if final_eval is not None and hp.get("final_eval", True) and best_path.exists():
        summary["metrics"] = final_eval(best_path)
    return summary
