"""Spectrograms of generated digits beside real ones of the same digit and speaker, with the
recogniser's verdict under each: the figure in the README (docs/speech-spectrograms.png).

    python benchmarks/speech_spectrograms.py --data ../shared/data/fsdd.npz --out docs/speech-spectrograms.png

Each row is one (digit, speaker) pair: the real test recording (take 0), the vocoder re-speaking
that recording from its own frames (resynthesis), and a clip the full pipeline generated from
the digit and speaker alone (prior, then vocoder; the card's default settings, seed 0), then,
for comparison, the old `fsdd-wavenet` (global conditioning only, 1 s, seed 0). Spectrograms are
|STFT|^2 in dB (256-sample Hann window, hop 32, 0-4 kHz), all on one colour scale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from engines import atomic
from engines.audio import mulaw
from engines.audio.data import load_fsdd
from engines.audio.generate import generate_audio
from engines.audio.model import load_audio_model
from engines.audio.speech import load_speech_model, resynthesize, run_to_end, speak
from engines.recognise import default_judge
from engines.registry import get_model

PAIRS = [(7, "george"), (3, "jackson"), (0, "lucas"), (9, "nicolas"), (5, "theo"), (2, "yweweler")]
PX_PER_S = 300  # horizontal pixels per second of audio
HEIGHT = 128  # pixels for 0-4 kHz
DB_RANGE = (-90.0, -10.0)
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def spectrogram_db(x: np.ndarray, n_fft: int = 256, hop: int = 32) -> np.ndarray:
    x = np.concatenate([np.zeros(n_fft // 2), np.asarray(x, np.float64), np.zeros(n_fft // 2)])
    n = max(1, 1 + (len(x) - n_fft) // hop)
    idx = np.arange(n)[:, None] * hop + np.arange(n_fft)[None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft), axis=1)) ** 2
    return 10 * np.log10(np.maximum(spec.T, 1e-12))  # (freq, time)


def colour(db: np.ndarray) -> np.ndarray:
    """dB -> RGB through a dark-blue / magenta / yellow ramp (like 'magma')."""
    t = np.clip((db - DB_RANGE[0]) / (DB_RANGE[1] - DB_RANGE[0]), 0, 1)
    stops = np.array([0, 0.25, 0.5, 0.75, 1.0])
    rgb = np.array([[0, 0, 4], [59, 15, 112], [183, 55, 121], [252, 137, 97], [252, 253, 191]], float)
    return np.stack([np.interp(t, stops, rgb[:, c]) for c in range(3)], axis=-1).astype(np.uint8)


def panel(samples: np.ndarray, rate: int, width_s: float) -> Image.Image:
    db = spectrogram_db(samples)[::-1]  # high frequencies on top
    img = Image.fromarray(colour(db)).resize((max(1, int(len(samples) / rate * PX_PER_S)), HEIGHT), Image.BILINEAR)
    canvas = Image.new("RGB", (int(width_s * PX_PER_S), HEIGHT), (0, 0, 4))
    canvas.paste(img, (0, 0))
    return canvas


def verdict_text(judge, samples, rate) -> str:
    v = judge.judge(samples, rate)
    return f"heard: {v.name} ({v.probability:.0%}), {v.speaker} ({v.speaker_probability:.0%})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="fsdd.npz (the real test recordings)")
    p.add_argument("--out", default="docs/speech-spectrograms.png")
    p.add_argument("--model", default="fsdd-speech")
    p.add_argument("--baseline", default="fsdd-wavenet")
    args = p.parse_args(argv)
    judge = default_judge("audio")
    if judge is None:
        print("no audio recogniser installed", file=sys.stderr)
        return 1
    speech = load_speech_model(get_model(args.model, kind="audio"))
    baseline = load_audio_model(get_model(args.baseline, kind="audio"))
    rate = speech.sample_rate
    test = load_fsdd(args.data, "test")
    defaults = dict(speech.decoding_defaults)
    ft, t = float(defaults.get("frame_temperature", 0.6)), float(defaults.get("temperature", 1.0))
    rows = []
    for digit, speaker in PAIRS:
        i = next(k for k in range(len(test)) if test.digits[k] == digit
                 and test.speakers[test.speaker_ids[k]] == speaker)
        real = mulaw.decode(test.clips[i])
        _, chunks = resynthesize(speech, real, seed=0, speaker=speaker, temperature=t)
        resyn = run_to_end(speech, chunks).samples
        gen = run_to_end(speech, speak(speech, seed=0, digit=digit, speaker=speaker, frame_temperature=ft,
                                       temperature=t)).samples
        old = generate_audio(baseline, seconds=1.0, seed=0, digit=digit, speaker=speaker).samples[0]
        rows.append((f"{digit} / {speaker}", [("real (test take)", real), ("resynthesis", resyn),
                                              ("generated: prior + vocoder", gen), ("fsdd-wavenet (global only)", old)]))
        print(f"{digit} {speaker}: " + "; ".join(f"{name}: {verdict_text(judge, x, rate)}" for name, x in rows[-1][1]),
              flush=True)
    width_s = 1.2
    font = ImageFont.truetype(FONT, 13) if Path(FONT).exists() else ImageFont.load_default()
    small = ImageFont.truetype(FONT, 11) if Path(FONT).exists() else ImageFont.load_default()
    label_w, cell_w, cell_h = 110, int(width_s * PX_PER_S), HEIGHT + 36
    sheet = Image.new("RGB", (label_w + 4 * (cell_w + 8), 28 + len(rows) * (cell_h + 8)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (name, _) in enumerate(rows[0][1]):
        draw.text((label_w + c * (cell_w + 8), 6), name, fill="black", font=font)
    for r, (label, cells) in enumerate(rows):
        y = 28 + r * (cell_h + 8)
        draw.text((6, y + HEIGHT // 2 - 8), label, fill="black", font=font)
        for c, (_, x) in enumerate(cells):
            xo = label_w + c * (cell_w + 8)
            sheet.paste(panel(x, rate, width_s), (xo, y))
            draw.text((xo, y + HEIGHT + 3), f"{len(x) / rate:.2f} s  " + verdict_text(judge, x, rate), fill="black",
                      font=small)
    with atomic.atomic_path(args.out) as tmp:
        sheet.save(tmp, format="PNG")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
