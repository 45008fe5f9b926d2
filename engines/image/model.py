"""A loaded image model: the three ONNX graphs of a Gated PixelCNN plus what its card says.

The card (written by `engines.training.export_pixelcnn`) gives the image geometry, the
output type ("bernoulli": one logit per pixel; "categorical256": 256 logits per channel),
the conditioning (digit labels plus a "no label" value) and the window sizes the fast
sampler keeps. `ImageModel.distribution_logits` turns any output into per-value logits
(B, V): a Bernoulli logit l becomes the two logits [0, l], so one sampler chain
(temperature, top-k, ...) serves both kinds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engines.errors import InputError, ModelLoadError
from engines.registry import ModelInfo
from engines.runtime import ModelSession, open_session

OUTPUT_TYPES = ("bernoulli", "categorical256")  # shipped kinds; "categorical<N>" works for any N = levels
ROLES = ("model", "row_step", "pixel_step")


@dataclass(frozen=True)
class ImageShape:
    height: int
    width: int
    channels: int
    levels: int  # values per channel (2 for binary images)
    n_layers: int
    n_filters: int
    row_window: int  # image rows above r the row step reads
    vertical_window: int  # cached rows of vertical features per layer
    pixel_window: int  # image columns c-pixel_window+1..c the pixel step reads
    horizontal_window: int  # cached columns of horizontal features per layer

    @property
    def dims(self) -> int:
        return self.height * self.width * self.channels


@dataclass
class ImageModel:
    info: ModelInfo
    shape: ImageShape
    output: str  # "bernoulli" | "categorical256" (| "categorical<levels>")
    n_classes: int  # 0: unconditional only
    none_label: int  # label meaning "no label"
    full: ModelSession
    row_step: ModelSession | None
    pixel_step: ModelSession | None
    decoding_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def bernoulli(self) -> bool:
        return self.output == "bernoulli"

    @property
    def values(self) -> int:
        """V: the number of values a channel can take (2 or 256)."""
        return self.shape.levels

    @property
    def has_fast_path(self) -> bool:
        return self.row_step is not None and self.pixel_step is not None

    def label_value(self, label: int | None) -> int:
        """The graph's label input for a user's label (None = unconditional); InputError when out of range."""
        if label is None:
            return self.none_label
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise InputError(f"label {label!r} is not a whole number")
        if self.n_classes == 0:
            raise InputError(f"model {self.id!r} is unconditional: it takes no label (leave --label out)")
        if not 0 <= int(label) < self.n_classes:
            raise InputError(f"label {label} is out of range: model {self.id!r} knows labels 0-{self.n_classes - 1} "
                             "(leave --label out to sample without one)")
        return int(label)

    def labels(self, label: int | None, batch: int) -> np.ndarray:
        return np.full((batch,), self.label_value(label), dtype=np.int64)

    # --- raw graph calls -------------------------------------------------------------
    def forward(self, pixels: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """pixels (B, C, H, W) raw values, labels (B,) -> raw outputs (B, H, W, C, V') float32."""
        return self.full.run({"pixels": np.ascontiguousarray(pixels, dtype=np.float32),
                              "label": np.ascontiguousarray(labels, dtype=np.int64)}, ["logits"])[0]

    def distribution_logits(self, raw: np.ndarray) -> np.ndarray:
        """Raw outputs (..., V') -> per-value logits (..., V): Bernoulli l -> [0, l]."""
        raw = np.asarray(raw, dtype=np.float64)
        if self.bernoulli:
            return np.concatenate([np.zeros_like(raw[..., :1]), raw[..., :1]], axis=-1)
        return raw

    def log_probs(self, pixels: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """log p(x_i | x_<i) of every dimension of `pixels` (B, C, H, W) -> (B, C, H, W) float64 nats."""
        raw = self.forward(pixels, labels)  # (B, H, W, C, V')
        x = np.asarray(pixels).astype(np.int64).transpose(0, 2, 3, 1)  # (B, H, W, C)
        if self.bernoulli:
            l = raw[..., 0].astype(np.float64)  # log p(1) = -softplus(-l), log p(0) = -softplus(l)
            signed = np.where(x == 1, -l, l)
            lp = -(np.maximum(signed, 0) + np.log1p(np.exp(-np.abs(signed))))
        else:
            z = raw.astype(np.float64)
            m = z.max(-1, keepdims=True)
            lse = (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[..., 0]
            lp = np.take_along_axis(z, x[..., None], -1)[..., 0] - lse
        return lp.transpose(0, 3, 1, 2)


def shape_from_card(card: dict[str, Any]) -> ImageShape:
    arch = card.get("architecture") or {}
    values = {}
    for key in ("height", "width", "channels", "levels", "n_layers", "n_filters", "row_window",
                "vertical_window", "pixel_window", "horizontal_window"):
        try:
            values[key] = int(arch[key])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"card of {card.get('id')!r}: architecture lacks a whole number {key!r}") from exc
    return ImageShape(**values)


def card_n_classes(card: dict) -> int:
    """The labels a PixelCNN card is conditioned on (0: unconditional only), as `load_image_model` reads them."""
    return int((card.get("conditioning") or {}).get("num_classes", 0) or 0)


def load_image_model(info: ModelInfo, threads: int | None = 1, *, fast: bool = True) -> ImageModel:
    """Open the graphs named in the card; `threads` is for the full graph (the step graphs use 1)."""
    card = info.card
    shape = shape_from_card(card)
    output = card.get("output")
    expected = "bernoulli" if shape.levels == 2 and output == "bernoulli" else f"categorical{shape.levels}"
    if output != expected:
        raise ModelLoadError(f"{info.path}: card output {output!r} does not match {shape.levels} levels "
                             f"(expected {expected!r}; known outputs: {', '.join(OUTPUT_TYPES)})")
    cond = card.get("conditioning") or {}
    n_classes = card_n_classes(card)
    none_label = int(cond.get("none_label", n_classes))
    io = card.get("io") or {}

    def session(role: str, n_threads: int | None) -> ModelSession:
        spec = io.get(role, {})
        return open_session(info.file(role), expect_inputs=spec.get("inputs"), expect_outputs=spec.get("outputs"),
                            intra_op_threads=n_threads)

    full = session("model", threads)
    files = card.get("files", {})
    has_steps = fast and "row_step" in files and "pixel_step" in files
    row = session("row_step", 1) if has_steps else None
    pixel = session("pixel_step", 1) if has_steps else None
    model = ImageModel(info, shape, output, n_classes, none_label, full, row, pixel,
                       dict(card.get("decoding_defaults", {}) or {}))
    _check_graph_shape(model)
    return model


def _check_graph_shape(model: ImageModel) -> None:
    """The full graph's static input shape must be the card's image."""
    s = model.shape
    dims = model.full.session.get_inputs()[0].shape  # [batch, C, H, W]
    want = [s.channels, s.height, s.width]
    got = [d if isinstance(d, int) else None for d in dims[1:]]
    if len(dims) != 4 or any(g is not None and g != w for g, w in zip(got, want)):
        raise ModelLoadError(f"{model.full.path}: graph input shape {dims} does not match the card's "
                             f"{s.channels}x{s.height}x{s.width} image")
