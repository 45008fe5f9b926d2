"""A run of the Density tab (Sample, Inpaint, Compare orderings) and how it is described.

A run is one or more lanes, each a resolved `engines.density.request.DensityRequest` (an
ordering, a seed, a number of samples, the init image and mask; Compare orderings has one lane
per ordering) and what they have drawn so far: the images, the pixels still to come, the
ordering each lane used and each sample's result. Its `status_html`, `progress_text`,
`sample_tip` and `lane_caption` are the words the tab shows for it, and `command` the
`chainrule generate image` command (the lane's `to_command`) that reproduces a lane pixel for pixel.
"""

from __future__ import annotations

import html
import shlex

import numpy as np

from studio.density import work
from studio.image.runs import DrawingRun


class Run(DrawingRun):
    """The current (or last) run: its lanes and what they have drawn so far."""

    KINDS = {"sample": "Sample", "inpaint": "Inpaint", "compare": "Compare orderings"}
    STATE_WORDS = {"running": "drawing…", "done": "done", "stopped": "stopped (what was drawn is kept)",
                   "error": "failed"}
    DRAWN = "pixels drawn"

    def __init__(self, kind: str, info, family: str, lanes: list, before: tuple[np.ndarray, np.ndarray],
                 regenerate: np.ndarray | None, config, temperature: float, k: int) -> None:
        """`lanes`: the resolved DensityRequest of each lane (one, or one per ordering compared)."""
        super().__init__(kind, lanes[0].seed, lanes[0].count, before)
        self.info, self.family, self.lanes = info, family, lanes
        self.run_ids: dict[int, int | None] = {}  # lane -> its entry in the studio's history
        self.recorded = False  # its end (files, numbers) is in the history: recorded once
        self.notes: tuple[str, ...] = ()  # the engine's notes (an ordering the model was not trained in)
        self.model_id = info.id
        self.regenerate, self.config = regenerate, config
        self.temperature, self.k = temperature, k
        self.images: dict[int, np.ndarray] = {}  # lane -> (count, D) uint8 as drawn so far
        self.pending: dict[int, np.ndarray] = {}  # lane -> (count, D) bool: still to sample
        self.orders: dict[int, np.ndarray] = {}  # lane -> (D,) ordering used
        self.results: dict[tuple[int, int], work.SampleDone] = {}  # (lane, sample) -> result
        self.last_pixel: dict[int, int] = {}  # lane -> raster index last sampled
        self.n_sampled = 0  # pixels to sample per image

    @property
    def total_values(self) -> int:
        return self.n_sampled * sum(lane.count for lane in self.lanes)

    def command(self, lane: int = 0, init: str | None = None, mask: str | None = None) -> str:
        """The shell command that reproduces lane `lane` (init / mask: where its inputs were exported)."""
        return shlex.join(["chainrule", *self.lanes[lane].to_command(self.info, init_path=init, mask_path=mask)])

    # --- words ---------------------------------------------------------------------------------
    def order_text(self, lane: int) -> str:
        return work.ordering_label(self.lanes[lane].ordering)

    def progress_text(self, elapsed: float) -> str:
        per_position = sum(lane.count for lane in self.lanes)  # pixels drawn per ordering position
        rate = f" · {self.n / per_position / elapsed:.0f} px/s per image" if elapsed > 0.05 and self.n else ""
        return f"{self.n}/{max(1, self.total_values)} pixels{rate}"

    def sample_tip(self, ev: work.SampleDone) -> str:
        order = self.order_text(ev.lane)
        tip = f"seed {ev.seed} · {order} ordering\nlog p(image) = {ev.order_logprob:.2f} nats in this ordering"
        if self.family == "made":
            tip += f" (one mask)\nmixture of K = {ev.k} masks: {ev.ensemble_logprob:.2f} nats"
        if self.regenerate is not None:
            tip += f"\nlog p(filled pixels | kept ones) = {ev.sampled_logprob:.2f} nats over {ev.n_sampled} pixels"
        return tip

    def lane_caption(self, ev: work.SampleDone) -> str:
        if self.regenerate is not None:
            return f"log p(fill | kept) = {ev.sampled_logprob:.1f} nats"
        return f"log p = {ev.order_logprob:.1f} nats"

    def status_html(self, shown_sample: int | None) -> str:
        """The status line: the run, the shown sample's (or compared ordering's) numbers and,
        once done, the command that reproduces it."""
        parts = [f"<b>{self.KINDS[self.kind]} · {self.seeds_text()}</b>", html.escape(self.model_id)]
        if self.kind != "compare":
            parts.append(f"{html.escape(work.ordering_label(self.lanes[0].ordering))} ordering")
        if self.temperature != 1.0:
            parts.append("greedy" if self.temperature == 0 else f"temperature {self.temperature:g}")
        if self.regenerate is not None:
            parts.append(f"{int(self.regenerate.sum())} pixels regenerated exactly, the rest kept")
        parts.append(self.state_text())
        text = " · ".join(parts)
        for note in self.notes:  # e.g. an ordering the model was not trained in: exact, but poorer
            text += f"<br><span style='color:#92400e'>Note: {html.escape(note)}</span>"
        if self.kind == "compare":
            shown = self.results.get((shown_sample, 0)) if shown_sample is not None else None
        else:
            shown = self.results.get((0, shown_sample or 0))
        if shown is not None and self.state != "running":
            lane_order = self.order_text(shown.lane)
            which = f"ordering {lane_order}" if self.kind == "compare" else f"sample {shown.sample + 1}"
            text += (f"<br>{html.escape(which)}: seed {shown.seed} · "
                     f"log p(image) = {shown.order_logprob:.2f} nats in {html.escape(lane_order)} order")
            if self.family == "made":
                text += f" (one mask) · mixture of K = {shown.k} masks: {shown.ensemble_logprob:.2f} nats"
            if self.regenerate is not None:
                text += (f" · log p(filled pixels | kept ones) = {shown.sampled_logprob:.2f} nats over "
                         f"{shown.n_sampled} pixels")
        if self.state == "done":
            cmd = self.command(0)
            if self.kind == "compare":  # one command per ordering: the same but for --ordering
                argv = ["chainrule", *self.lanes[0].to_command(self.info)]
                if "--ordering" in argv:
                    del argv[argv.index("--ordering"):argv.index("--ordering") + 2]
                at = argv.index("--seed") if "--seed" in argv else len(argv)
                choices = "{" + "|".join(ln.ordering for ln in self.lanes) + "}"
                cmd = shlex.join(argv[:at]) + f" --ordering {choices} " + shlex.join(argv[at:])
            note = " (Export writes the -init and -mask PNGs it reads)" if self.regenerate is not None else ""
            text += f"<br><span style='color:#6b7280'>CLI: <code>{html.escape(cmd)}</code>{note}</span>"
        return text
