"""Tiny random WaveNets exported like real ones (model.onnx, step.onnx, cond.onnx + card.json), for the audio tests."""

from __future__ import annotations

from pathlib import Path

from tests.torch_models import spread_out

SPEAKERS = ["george", "jackson", "lucas"]


def make_wavenet(seed: int = 0, noise: float = 0.3, **config):
    """A small random WaveNet (receptive field 8) whose weights are spread out enough that every
    dependency shows: conditioning biases are non-zero (they start at zero in training)."""
    from engines.training.wavenet import WaveNet, WaveNetConfig

    defaults = dict(residual_channels=8, gate_channels=6, skip_channels=10, n_stacks=2, layers_per_stack=2,
                    n_digits=10, speakers=list(SPEAKERS), sample_rate=8000)
    return spread_out(lambda: WaveNet(WaveNetConfig(**{**defaults, **config})), seed, noise)


def export_model_dir(model, root: Path, model_id: str) -> Path:
    """Write root/model_id with the .onnx graphs and a card, as export_wavenet does."""
    from engines.training.export_wavenet import export_wavenet

    folder = Path(root) / model_id
    export_wavenet(model, folder, {"command": "test", "iter": 0}, model_id=model_id)
    return folder
