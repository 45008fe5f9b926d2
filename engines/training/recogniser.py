"""The recognisers: small classifiers that say what a sample IS, used as measuring instruments.

``AudioRecogniser``: raw log-mel frames (B, n_mels, T) (``engines.audio.mel``) -> digit logits
(B, 10) and speaker logits (B, n_speakers). Frames are normalised by the training set's
per-bin mean and std (buffers, so the exported graph takes raw frames), then

    Conv1d(n_mels -> C, 5) ReLU BN, Conv1d(C -> C, 5, dilation 2) ReLU BN,
    Conv1d(C -> C, 5, dilation 4) ReLU BN, Conv1d(C -> 2C, 3) ReLU           (B, 2C, T)
    max over time (so silence before or after a word changes nothing)        (B, 2C)
    two linear heads: digit, speaker

``ImageRecogniser``: a 28x28 grey image in [0, 1] (B, 1, 28, 28) -> digit logits (B, 10):
two 3x3 conv blocks with max pooling, then two linear layers. Trained on greys and on
binarized copies so it reads both kinds of model output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class AudioRecogniserConfig:
    n_mels: int = 40
    channels: int = 128
    n_digits: int = 10
    speakers: list[str] = field(default_factory=list)
    mel_mean: list[float] = field(default_factory=list)
    mel_std: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class AudioRecogniser(nn.Module):
    def __init__(self, config: AudioRecogniserConfig) -> None:
        super().__init__()
        self.config = c = config
        C = c.channels

        def block(cin, cout, k, d):
            return nn.Sequential(nn.Conv1d(cin, cout, k, dilation=d, padding=d * (k - 1) // 2), nn.ReLU(),
                                 nn.BatchNorm1d(cout))

        self.body = nn.Sequential(block(c.n_mels, C, 5, 1), block(C, C, 5, 2), block(C, C, 5, 4),
                                  nn.Conv1d(C, 2 * C, 3, padding=1), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.digit_head = nn.Linear(2 * C, c.n_digits)
        self.speaker_head = nn.Linear(2 * C, len(c.speakers))
        self.register_buffer("mel_mean", torch.tensor(c.mel_mean or [0.0] * c.n_mels).view(1, -1, 1), persistent=False)
        self.register_buffer("mel_std", torch.tensor(c.mel_std or [1.0] * c.n_mels).view(1, -1, 1), persistent=False)

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.body((mel - self.mel_mean) / self.mel_std).amax(dim=2)  # (B, 2C)
        z = self.dropout(z)
        return self.digit_head(z), self.speaker_head(z)


class ImageRecogniser(nn.Module):
    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(32),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(64),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 49, 128), nn.ReLU(),
                                  nn.Dropout(0.3), nn.Linear(128, n_classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))


def audio_loss(model: AudioRecogniser, mel, digit, speaker) -> torch.Tensor:
    d, s = model(mel)
    return F.cross_entropy(d, digit) + F.cross_entropy(s, speaker)
