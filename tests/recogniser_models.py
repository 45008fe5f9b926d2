"""Tiny random recognisers (classifier models) exported as the real ones are, for the judge tests."""

from __future__ import annotations

from pathlib import Path

from tests.torch_models import spread_out

SPEAKERS = ("ann", "bob", "cy")
TINY_MEL = {"sample_rate": 8000, "n_fft": 64, "hop": 32, "n_mels": 6, "fmin": 0.0, "fmax": 4000.0, "floor": 1e-5}


def make_audio_recogniser(seed: int = 0, noise: float = 0.3, channels: int = 4, speakers=SPEAKERS):
    """An AudioRecogniser on TINY_MEL frames (n_mels 6), `channels` wide, random but spread out."""
    from engines.training.recogniser import AudioRecogniser, AudioRecogniserConfig

    n_mels = TINY_MEL["n_mels"]
    cfg = AudioRecogniserConfig(n_mels=n_mels, channels=channels, speakers=list(speakers),
                                mel_mean=[-6.0] * n_mels, mel_std=[3.0] * n_mels)
    return spread_out(lambda: AudioRecogniser(cfg), seed, noise)


def make_image_recogniser(seed: int = 0, noise: float = 0.05):
    from engines.training.recogniser import ImageRecogniser

    return spread_out(ImageRecogniser, seed, noise)


def export_recogniser_dir(model, root: Path, model_id: str) -> Path:
    """Write root/model_id (model.onnx + card.json) with the exporter; the folder."""
    from engines.training.export_recogniser import export_audio, export_image
    from engines.training.recogniser import AudioRecogniser

    folder = Path(root) / model_id
    meta = {"command": "chainrule train recogniser (test)", "iter": 0}
    if isinstance(model, AudioRecogniser):
        export_audio(model, folder, {**meta, "data": {"path": "fsdd.npz", "mel": dict(TINY_MEL)},
                                     "metrics": {"test": {"digit_accuracy": 0.5, "speaker_accuracy": 0.25,
                                                          "n_clips": 8}}})
    else:
        export_image(model, folder, {**meta, "data": {"path": "mnist.npz"},
                                     "metrics": {"test": {"accuracy": 0.75, "binarized_accuracy": 0.5,
                                                          "n_images": 8}}})
    return folder
