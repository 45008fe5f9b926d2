"""Tiny random Gated PixelCNNs exported like real ones (three graphs + card.json), for the image tests."""

from __future__ import annotations

import json
from pathlib import Path

from tests.torch_models import spread_out


def make_pixelcnn(seed: int = 0, noise: float = 0.3, **config):
    """A small random PixelCNN whose weights are spread out enough that every dependency shows."""
    from engines.training.pixelcnn import PixelCNN, PixelCNNConfig

    defaults = dict(height=6, width=7, channels=1, levels=4, output="categorical", n_filters=12, n_layers=3,
                    kernel_size=3, first_kernel_size=5, head_filters=24, n_classes=3)
    return spread_out(lambda: PixelCNN(PixelCNNConfig(**{**defaults, **config})), seed, noise)


def export_model_dir(model, root: Path, model_id: str) -> Path:
    """Write root/model_id with the three .onnx graphs and a card, as export_pixelcnn does."""
    from engines.training.export_pixelcnn import build_card, export_onnx

    folder = Path(root) / model_id
    export_onnx(model, folder)
    card = build_card(model, {"command": "test", "iter": 0}, model_id=model_id)
    (folder / "card.json").write_text(json.dumps(card, indent=2))
    return folder
