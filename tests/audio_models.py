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


TINY_MEL = {"sample_rate": 8000, "n_fft": 16, "hop": 4, "n_mels": 6, "fmin": 0.0, "fmax": 4000.0, "floor": 1e-5}


def make_speech(seed: int = 0, **prior_config):
    """(vocoder, prior): a tiny random speech pipeline over 6-bin frames with a 4-sample hop; the
    vocoder has dilations 1, 2, 4 twice, the prior two GRU layers of 16 units and 3 Gaussians."""
    import math

    from engines.training.mel_prior import MelPrior, MelPriorConfig
    from engines.training.wavenet import WaveNet, WaveNetConfig

    D = TINY_MEL["n_mels"]
    stats = dict(mel_mean=[-5.0] * D, mel_std=[2.0] * D)
    vocoder = spread_out(lambda: WaveNet(WaveNetConfig(
        residual_channels=8, gate_channels=6, skip_channels=10, n_stacks=2, layers_per_stack=3, n_digits=0,
        speakers=list(SPEAKERS), n_mels=D, cond_channels=5, hop=TINY_MEL["hop"], **stats)), seed, 0.3)
    defaults = dict(n_mels=D, hidden=16, n_layers=2, prenet=8, n_components=3, cond_dim=4, speakers=list(SPEAKERS),
                    floor_value=math.log(TINY_MEL["floor"]), **stats)
    prior = spread_out(lambda: MelPrior(MelPriorConfig(**{**defaults, **prior_config})), seed + 1, 0.1)
    return vocoder, prior


def export_speech_dir(vocoder, prior, root: Path, model_id: str) -> Path:
    from engines.training.export_speech import export_speech

    folder = Path(root) / model_id
    meta = {"mel": dict(TINY_MEL), "command": "test"}
    export_speech(vocoder, prior, folder, meta, meta, model_id=model_id, block=2)
    return folder
