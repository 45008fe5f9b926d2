"""A run of the Image tab (Generate, Complete, Inpaint): what it paints and how it is described.

`DrawingRun` is what every run on a drawing canvas keeps (the Density tab's runs too): its
seeds, its state and timing, and whether it has taken the canvas over (the drawing before
it then is one undo step). `Run` adds what a PixelCNN painting produces: the ImageRequest it
carries out, the images as painted so far, the frames of each painting (for the GIF) and the
samples' results (each with the request that makes it alone); its
`status_html`, `progress_text` and `sample_tooltip` are the words the tab shows for it.
"""

from __future__ import annotations

import html
import time

import numpy as np

from studio.image import work


class DrawingRun:
    """The current (or last) run on a canvas: its seeds, state and timing."""

    STATE_WORDS = {"running": "running…", "done": "done", "stopped": "stopped", "error": "failed"}
    DRAWN = "values drawn"  # what `n` counts, once the run has ended

    def __init__(self, kind: str, seed: int, count: int, before: tuple[np.ndarray, np.ndarray]) -> None:
        self.kind, self.seed, self.count, self.before = kind, seed, count, before
        self.n = 0  # values drawn in all
        self.t0 = time.perf_counter()
        self.t_end: float | None = None
        self.state = "running"  # running | done | stopped | error
        self.touched = False  # the canvas shows this run (the drawing before is an undo step)
        self.verdicts: dict = {}  # finished sample -> what the image recogniser reads in it (None: nothing)

    def seeds_text(self) -> str:
        return f"seed {self.seed}" if self.count == 1 else f"seeds {self.seed}–{self.seed + self.count - 1}"

    def drawn_text(self) -> str:
        return f"{self.n} {self.DRAWN}"

    def state_text(self) -> str:
        """The state in words, with how long the run took once it has ended."""
        state = self.STATE_WORDS[self.state]
        if self.state != "running" and self.t_end is not None:
            state += f" in {self.t_end - self.t0:.2f} s"
        return state


class Run(DrawingRun):
    """The current (or last) run: what it paints and what it has produced so far."""

    KINDS = {"generate": "Generate", "complete": "Complete", "inpaint": "Inpaint"}
    STATE_WORDS = {"running": "painting…", "done": "done", "stopped": "stopped (what was painted is kept)",
                   "error": "failed"}
    DRAWN = "values painted"

    def __init__(self, kind: str, request, before: tuple[np.ndarray, np.ndarray], cli: str | None) -> None:
        """`request`: the resolved engines.image.request.ImageRequest the run carries out."""
        super().__init__(kind, request.seed, request.count, before)
        self.request = request
        self.model_id, self.candidates, self.label, self.cli = request.model, request.candidates, request.label, cli
        self.guidance = request.guidance or 0.0
        self.run_id: int | None = None  # its entry in the studio's history (None: not recorded)
        self.chain = ""
        self.method = ""
        self.plain_because = ""  # why posterior-aware inpainting was not used, when it was asked for
        self.n_values = 0
        self.images: dict[int, np.ndarray] = {}  # sample -> (K, C, H, W) as painted so far
        self.recorders: dict[int, work.FrameRecorder] = {}
        self.results: dict[int, work.SampleDone] = {}
        self.current = 0  # the sample being painted

    def frames(self, sample: int) -> list[np.ndarray]:
        """(C, H, W) frames of one sample's painting: the chosen candidate's when posterior-aware."""
        rec = self.recorders.get(sample)
        if rec is None:
            return []
        done = self.results.get(sample)
        k = done.chosen if done is not None else 0
        return [f[k] for f in rec.frames]

    def progress_text(self, elapsed: float) -> str:
        total = max(1, self.n_values * self.count)
        rate = f" · {self.n / elapsed:.0f} values/s" if elapsed > 0.05 and self.n else ""
        sample = f"sample {self.current + 1}/{self.count} · " if self.count > 1 else ""
        return f"{sample}{self.n}/{total} values{rate}"

    def status_html(self, shown: work.SampleDone | None, label_name: str | None) -> str:
        """The status line: the run (seeds, digit `label_name`, chain, sampler, state), the
        `shown` sample's numbers and, once done, the command that reproduces it."""
        parts = [f"<b>{self.KINDS[self.kind]} · {self.seeds_text()}</b>"]
        if label_name is not None:
            parts.append(f"digit {html.escape(label_name)}")
        if self.chain:
            parts.append(html.escape(self.chain))
        if self.method:
            parts.append(f"{self.method} sampler")
        if self.candidates:
            parts.append(f"posterior-aware, K = {self.candidates}")
        if self.plain_because:
            parts.append(html.escape(self.plain_because))
        parts.append(self.state_text())
        text = " · ".join(parts)
        if shown is not None:
            text += (f"<br>sample {shown.sample + 1}: seed {shown.seed} · "
                     f"log p(image) = {shown.total_logprob:.2f} nats "
                     f"({shown.bits_per_dim:.4f} bits/dim) · {shown.n_sampled} values sampled")
            if shown.candidates is not None and shown.known_after_logprobs is not None:
                k = shown.chosen
                text += (f"<br>posterior-aware: candidate {k + 1} of {len(shown.candidates)} chosen, "
                         f"log p(known pixels after the mask) = {shown.known_after_logprobs[k]:.2f} nats "
                         f"over {shown.n_known_after} values · weight {shown.weights[k]:.3f} · "
                         f"effective sample size {shown.effective_sample_size:.1f}")
        if self.cli and self.state == "done":
            text += f"<br><span style='color:#6b7280'>CLI: <code>{html.escape(self.cli)}</code></span>"
        elif self.state == "done":  # the canvas is no file the CLI can read: the exported PNG carries all of it
            text += ("<br><span style='color:#6b7280'>CLI: Export PNG, then <code>chainrule generate --from "
                     "FILE.png</code> makes the same image</span>")
        return text


def sample_tooltip(ev: work.SampleDone) -> str:
    """A finished sample's thumbnail tooltip: its seed and log-likelihood (and candidate)."""
    tip = (f"sample {ev.sample + 1} · seed {ev.seed}\nlog p(image) = {ev.total_logprob:.2f} nats "
           f"({ev.bits_per_dim:.4f} bits/dim)")
    if ev.candidates is not None and ev.known_after_logprobs is not None:
        tip += (f"\ncandidate {ev.chosen + 1} of {len(ev.candidates)} chosen: log p(known pixels after the mask) "
                f"= {ev.known_after_logprobs[ev.chosen]:.2f} nats")
    return tip
