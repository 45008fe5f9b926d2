"""What the image recogniser reads in the Image and Density tabs' images ("reads as: 3 (94%)").

The recogniser is a classifier model (`engines.recognise`); `ImageReader` finds the one among
the models the tab lists, opens it on first use (cached by the engine) and judges (N, C, H, W)
model values on the UI thread: one ONNX call on 28x28 digits takes about a millisecond, so a
finished sample is judged where it is shown, with no worker round trip. Where no recogniser is
installed, or it cannot read the tab's images (another size, colour) or fails to load, the
reader is unavailable and the tabs show nothing. Qt-free, so it is tested without a window.
"""

from __future__ import annotations

import html
import logging
from typing import Iterable

import numpy as np

from engines.errors import ChainruleError
from engines.recognise import Verdict, find_recogniser, load_recogniser

log = logging.getLogger(__name__)

PREFIX = "reads as: "
WAITING_TEXT = PREFIX + "…"  # while a sample is being painted


class ImageReader:
    def __init__(self) -> None:
        self.info = None  # the recogniser's ModelInfo, or None
        self._judge = None
        self._failed: str | None = None  # why it could not be loaded (then it is not tried again)

    def set_models(self, models: Iterable) -> None:
        """Pick the image recogniser among `models` (ModelInfos; the tab's listing)."""
        info = find_recogniser(models, "image")
        same = (info is not None and self.info is not None and (info.id, info.path) == (self.info.id, self.info.path))
        if not same:
            self.info, self._judge, self._failed = info, None, None

    @property
    def model_id(self) -> str | None:
        return self.info.id if self.info is not None else None

    def _loaded(self):
        if self.info is None or self._failed is not None:
            return None
        if self._judge is None:
            try:
                self._judge = load_recogniser(self.info)
            except ChainruleError as exc:  # a broken recogniser hides the labels, never the tab
                self._failed = str(exc)
                log.warning("the image recogniser cannot be used: %s", exc)
                return None
        return self._judge

    def reads(self, height: int, width: int, channels: int) -> bool:
        """Whether images of this geometry can be judged (loads the recogniser if needed)."""
        judge = self._loaded()
        return judge is not None and judge.reads(height, width, channels)

    def judge(self, images: np.ndarray, levels: int) -> list[Verdict] | None:
        """A verdict per image of `images` (N, C, H, W) model values 0..levels-1; None when they
        cannot be judged (no recogniser, another geometry, a failure: logged)."""
        x = np.asarray(images)
        if x.ndim != 4 or not self.reads(x.shape[2], x.shape[3], x.shape[1]):
            return None
        try:
            return self._judge.judge(x, levels=levels)
        except ChainruleError as exc:
            log.warning("the image recogniser could not judge an image: %s", exc)
            return None

    def judge_one(self, pixels: np.ndarray, levels: int) -> Verdict | None:
        """The verdict for one image (C, H, W); None as for `judge`."""
        verdicts = self.judge(np.asarray(pixels)[None], levels)
        return verdicts[0] if verdicts else None


def reads_as_text(verdict: Verdict | None) -> str:
    """'reads as: 3 (94%)' ('' without a verdict)."""
    return f"{PREFIX}{verdict.short()}" if verdict is not None else ""


def reads_as_html(verdict: Verdict | None) -> str:
    """The label's rich text: the digit in bold, its probability after it."""
    if verdict is None:
        return ""
    return (f"<span style='color:#4b5563'>{html.escape(PREFIX)}</span><b>{verdict.label}</b> "
            f"<span style='color:#4b5563'>({100 * verdict.probability:.0f}%)</span>")


def reads_as_tooltip(verdict: Verdict | None, model_id: str | None) -> str:
    """The three most probable digits, and which recogniser said so."""
    if verdict is None:
        return ""
    top = ", ".join(f"{name} {100 * p:.0f}%" for _i, name, p in verdict.top(3))
    return f"What the recogniser {model_id or ''} reads in this image: {top}"
