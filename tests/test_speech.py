"""The speech pipeline on a tiny random model: the vocoder's local conditioning (torch = ONNX, cached
steps = the full graph), the frame prior's exact censored likelihood, seeds, the stop bit, and the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the tiny models are built in torch

from engines.audio import mulaw  # noqa: E402
from engines.audio.mel import MelSpec, frame_of_sample, log_mel, with_silence_frame  # noqa: E402
from engines.audio.prior import FrameStep, score_frames, write_frames  # noqa: E402
from engines.audio.speech import (frames_of_audio, load_speech_model, resynthesize, run_to_end,  # noqa: E402
                                  score_prior, score_vocoder, speak)
from engines.audio.wav import read_audio, write_audio  # noqa: E402
from engines.registry import read_card  # noqa: E402
from tests.audio_models import SPEAKERS, TINY_MEL, export_speech_dir, make_speech  # noqa: E402
from tests.cli_helpers import error_line, run_cli  # noqa: E402

MODEL = "tiny-speech"
SPEC = MelSpec(**TINY_MEL)


@pytest.fixture(scope="module")
def torch_models():
    vocoder, prior = make_speech(seed=0)
    with torch.no_grad():
        prior.head.bias[-1] = -2.5  # stop after ~1 in 13 frames: utterances of a few frames
    return vocoder, prior


@pytest.fixture(scope="module")
def models_dir(torch_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("speech-models")
    export_speech_dir(*torch_models, root, MODEL)
    return str(root)


@pytest.fixture(scope="module")
def speech(models_dir):
    return load_speech_model(read_card(Path(models_dir) / MODEL))


def random_frames(n_samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(-5, 2, (SPEC.n_mels, SPEC.n_frames(n_samples))).astype(np.float32)


# --- frames --------------------------------------------------------------------------------------

def test_frame_of_sample_reads_the_nearest_frame_and_silence_before():
    idx = frame_of_sample(np.arange(-3, 12), n_frames=3, hop=4)
    # before the clip: the silence frame 0; sample s: 1 + round(s / 4), clamped to the last of 3 frames
    assert idx.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3]


def test_log_mel_sees_a_tone_in_its_band_and_silence_at_the_floor():
    spec = MelSpec()
    t = np.arange(8000) / 8000
    mel = log_mel(0.5 * np.sin(2 * np.pi * 1000 * t), spec)
    assert mel.shape == (40, 1 + 8000 // 80)
    centre = mel[:, 10:-10].mean(axis=1)
    assert 14 <= int(centre.argmax()) <= 22  # 1 kHz sits in the middle bins of 0-4 kHz on the mel scale
    silent = log_mel(np.zeros(800), spec)
    assert np.all(silent == np.float32(math.log(spec.floor)))


# --- the vocoder ---------------------------------------------------------------------------------

def test_vocoder_graph_matches_torch_and_depends_on_the_frames(torch_models, speech):
    vocoder, _ = torch_models
    rng = np.random.default_rng(1)
    n = 40
    classes = rng.integers(0, 256, n)
    frames = random_frames(n)
    ext = with_silence_frame(frames, SPEC)
    rf = speech.vocoder.receptive_field
    x = np.concatenate([np.full(rf, mulaw.SILENCE), classes[:-1]])
    index = frame_of_sample(np.arange(len(x)) - (rf - 1), ext.shape[1] - 1, SPEC.hop)
    got = speech.vocoder.logits(x[None], np.array([0]), np.array([1]), ext[None], index[None])[0]
    with torch.no_grad():
        want = vocoder(torch.from_numpy(x)[None], torch.tensor([0]), torch.tensor([1]), torch.from_numpy(ext)[None],
                       torch.from_numpy(index)[None])[0].T.numpy()
    assert np.abs(got - want).max() < 1e-4
    other = ext.copy()
    other[:, 5] += 3.0  # clip frame 4 changed (ext[:, 0] is the silence frame)
    moved = speech.vocoder.logits(x[None], np.array([0]), np.array([1]), other[None], index[None])[0]
    changed = np.flatnonzero(np.abs(moved - got).max(axis=1) > 1e-5) - (rf - 1)  # clip sample indices
    # the kernel-3 frame convolution reaches clip frame 3, whose nearest samples start at 3 * hop - hop / 2;
    # nothing before changes, and everything after may (the samples are causal)
    assert changed.min() == 3 * SPEC.hop - SPEC.hop // 2


def test_cached_vocoding_equals_the_full_graph(speech):
    n = 50
    frames = random_frames(n, seed=2)
    chunks = list(speech_vocode(speech, frames, seed=3, chunk=7))
    classes = np.concatenate([c.classes for c in chunks], axis=1)[0]
    logprobs = np.concatenate([c.logprobs for c in chunks], axis=1)[0]
    assert len(classes) == SPEC.n_frames(n) * SPEC.hop
    rescored = score_vocoder(speech, classes, frames, 1)
    assert np.abs(rescored - logprobs).max() < 1e-4  # what was reported is what the model says
    again = np.concatenate([c.classes for c in speech_vocode(speech, frames, seed=3, chunk=64)], axis=1)[0]
    assert np.array_equal(again, classes)  # the chunking changes nothing
    other = np.concatenate([c.classes for c in speech_vocode(speech, frames, seed=4, chunk=64)], axis=1)[0]
    assert not np.array_equal(other, classes)


def speech_vocode(speech, frames, seed, chunk):
    from engines.audio.speech import vocode

    return vocode(speech, frames, speaker_id=1, seed=seed, temperature=1.0, chunk_samples=chunk)


# --- the prior -----------------------------------------------------------------------------------

def test_prior_likelihood_matches_torch_including_floor_values(torch_models, speech):
    _, prior = torch_models
    frames = random_frames(30, seed=5)
    frames[:, 2] = SPEC.silence_value  # a silent frame: censored values
    frames[1, 4] = SPEC.silence_value
    engine = score_prior(speech, frames, digit=4, speaker="lucas")
    with torch.no_grad():
        nll, count = prior.nll(torch.from_numpy(frames.T[None].copy()), torch.tensor([frames.shape[1]]),
                               torch.tensor([4]), torch.tensor([SPEAKERS.index("lucas")]))
    total = sum(f.logprob + f.stop_logprob for f in engine)
    assert total == pytest.approx(-float(nll), abs=1e-3)
    assert engine[-1].stop and not any(f.stop for f in engine[:-1])


def test_censored_density_integrates_to_one(speech):
    """One dimension, one component: the mass at the floor plus the density above it is 1 (and a
    density that forgot the censoring would not be)."""
    p = speech.prior
    D = p.n_mels
    dist = FrameStep(logit_pi=np.zeros((1, p.n_components), np.float32),
                     mean=np.full((1, p.n_components, D), p.floor + 0.5, np.float32),
                     scale=np.full((1, p.n_components, D), 1.0, np.float32), stop_logit=np.zeros(1, np.float32))
    grid = np.linspace(p.floor + 1e-3, p.floor + 12, 6000)
    # vary dimension 0 only; the others sit at the floor, whose censored mass is shared by every point
    x = np.full((len(grid), D), p.floor, np.float32)
    x[:, 0] = grid
    rest = p.frame_logprob(FrameStep(dist.logit_pi.repeat(len(grid), 0), dist.mean.repeat(len(grid), 0),
                                     dist.scale.repeat(len(grid), 0), dist.stop_logit.repeat(len(grid))), x)
    at_floor = p.frame_logprob(dist, np.full((1, D), p.floor, np.float32))[0]
    mass_floor_one_dim = math.exp(at_floor / D)  # every dimension has the same mass at the floor
    above = np.trapezoid(np.exp(rest - at_floor * (D - 1) / D), grid)
    assert mass_floor_one_dim + above == pytest.approx(1.0, abs=2e-3)
    assert mass_floor_one_dim < 0.8 and above > 0.2  # both parts matter


def test_prior_writes_reproducible_frames_whose_scores_are_exact(speech):
    frames = list(write_frames(speech.prior, digit_id=3, speaker_id=0, seed=11, temperature=1.0, max_frames=40))
    again = list(write_frames(speech.prior, digit_id=3, speaker_id=0, seed=11, temperature=1.0, max_frames=40))
    assert [f.frame.tolist() for f in frames] == [f.frame.tolist() for f in again]
    assert frames[-1].stop and len(frames) < 40
    stacked = np.stack([f.frame for f in frames], axis=1)
    assert np.all(stacked >= speech.prior.floor)  # drawn, then clamped at the floor
    rescored = score_frames(speech.prior, stacked, digit_id=3, speaker_id=0)
    assert sum(f.logprob + f.stop_logprob for f in rescored) == pytest.approx(
        sum(f.logprob + f.stop_logprob for f in frames), abs=1e-4)
    other = list(write_frames(speech.prior, digit_id=3, speaker_id=0, seed=12, temperature=1.0, max_frames=40))
    assert [f.frame.tolist() for f in other] != [f.frame.tolist() for f in frames]


def test_stop_bit_decides_the_length(torch_models, tmp_path):
    vocoder, prior = torch_models
    import copy

    for bias, expect in ((8.0, 1), (-12.0, 25)):
        p = copy.deepcopy(prior)
        with torch.no_grad():
            p.head.bias[-1] = bias
            p.head.weight[-1] = 0.0
        folder = export_speech_dir(vocoder, p, tmp_path, f"stop{int(bias)}")
        model = load_speech_model(read_card(folder))
        frames = list(write_frames(model.prior, digit_id=1, speaker_id=1, seed=0, temperature=1.0, max_frames=25))
        assert len(frames) == expect


def test_speak_then_both_levels_rescore(speech):
    r = run_to_end(speech, speak(speech, seed=2, digit=7, speaker="george", frame_temperature=0.7))
    n_frames = r.frames.shape[1]
    assert len(r.samples) == n_frames * SPEC.hop and len(r.frame_logprobs) == n_frames
    prior = score_prior(speech, r.frames, digit=7, speaker="george")
    assert sum(f.logprob + f.stop_logprob for f in prior) == pytest.approx(r.prior_logprob, abs=1e-3)
    voc = score_vocoder(speech, mulaw.encode(r.samples), r.frames, speech.speaker_id("george"))
    assert voc.sum() == pytest.approx(r.vocoder_logprob, abs=1e-3)
    assert np.array_equal(run_to_end(speech, speak(speech, seed=2, digit=7, speaker="george",
                                                   frame_temperature=0.7, chunk_samples=3)).samples, r.samples)


def test_continuation_keeps_the_prompt_frames_and_goes_on(speech):
    prompt = np.sin(np.arange(37) / 3.0).astype(np.float32) * 0.3
    r = run_to_end(speech, speak(speech, seed=1, digit=2, speaker="lucas", prompt=prompt))
    p_frames = frames_of_audio(prompt, SPEC).shape[1]
    assert r.frames.shape[1] > p_frames
    assert np.allclose(r.frames[:, :p_frames], frames_of_audio(prompt, SPEC))
    assert len(r.samples) == r.frames.shape[1] * SPEC.hop - len(prompt)


def test_resynthesis_follows_the_recording_and_the_voice_changes_it(speech):
    rec = (0.4 * np.sin(np.arange(60) / 2.0)).astype(np.float32)
    frames, chunks = resynthesize(speech, rec, seed=0, speaker="george")
    a = run_to_end(speech, chunks).samples
    assert len(a) == len(rec) and np.allclose(frames, frames_of_audio(rec, SPEC))
    _, chunks = resynthesize(speech, rec, seed=0, speaker="jackson")
    assert not np.array_equal(run_to_end(speech, chunks).samples, a)


# --- the CLI -------------------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("isolated_user_models")


def test_cli_generate_reports_both_levels_and_writes_the_wav(capsys, models_dir, tmp_path):
    out = tmp_path / "seven.wav"
    args = ["generate", "audio", "--model", MODEL, "--digit", "7", "--speaker", "george", "--seed", "4",
            "--out", str(out)]
    r, _ = run_cli(capsys, models_dir, *args)
    assert r["settings"]["mode"] == "generation" and r["frames"] >= 1
    assert r["prior_logprob"] < 0 and r["vocoder_logprob"] < 0
    audio = read_audio(out)
    assert len(audio.samples) == r["frames"] * SPEC.hop
    first = out.read_bytes()
    run_cli(capsys, models_dir, *args)
    assert out.read_bytes() == first  # the seed reproduces both levels


def test_cli_resynth_and_score(capsys, models_dir, tmp_path):
    rec = tmp_path / "rec.wav"
    write_audio(rec, (0.3 * np.sin(np.arange(120) / 4.0)).astype(np.float32), 8000)
    r, _ = run_cli(capsys, models_dir, "generate", "audio", "--model", MODEL, "--resynth", str(rec), "--speaker",
                   "jackson", "--seed", "1", "--out", str(tmp_path / "re.wav"))
    assert r["settings"]["mode"] == "resynthesis" and r["new_samples"] == 120 and r["prior_logprob"] is None
    s, _ = run_cli(capsys, models_dir, "score", "--model", MODEL, "--audio", str(rec), "--digit", "3",
                   "--speaker", "lucas")
    assert s["n"] == 120 and s["frames"] == SPEC.n_frames(120)
    assert s["bits_per_sample"] == pytest.approx(-sum(s["logprobs"]) / math.log(2) / 120)


@pytest.mark.parametrize("extra, words", [
    (["--seconds", "1"], "--seconds does not apply"),
    (["--top-k", "5"], "top-k 5 cannot be used for audio models"),
    (["--digit", "12"], "digit 12 is out of range"),
    (["--speaker", "nobody"], "unknown speaker"),
    (["--frame-temperature", "-1"], "frame temperature"),
])
def test_cli_refuses_what_does_not_apply(capsys, models_dir, extra, words):
    line = error_line(capsys, models_dir, "generate", "audio", "--model", MODEL, *extra)
    assert words in line


def test_wavenet_refuses_speech_flags(capsys, tmp_path):
    from tests.audio_models import export_model_dir, make_wavenet

    root = tmp_path / "m"
    export_model_dir(make_wavenet(seed=1), root, "tiny-wavenet")
    line = error_line(capsys, str(root), "generate", "audio", "--model", "tiny-wavenet", "--frame-temperature", "0.5")
    assert "--frame-temperature does not apply" in line


def test_eval_generation_judges_every_digit_and_speaker(capsys, models_dir, monkeypatch):
    """`eval --task generation`: one clip per digit and speaker per seed, each judged by the recogniser
    (here a stand-in judge that hears every clip as 'three, lucas', so the accuracies are known)."""
    from engines.audio import speech_commands
    from engines.recognise import Verdict

    heard = []

    class FakeJudge:
        id = "fake"

        def judge(self, samples, rate):
            heard.append(len(samples))
            return Verdict(label=3, name="three", probability=0.9, probs=np.eye(10)[3], speaker="lucas",
                           speaker_probability=0.8)

    monkeypatch.setattr(speech_commands, "_judge", lambda: FakeJudge())
    r, _ = run_cli(capsys, models_dir, "eval", "--model", MODEL, "--task", "generation",
                   "--seeds", "2")
    assert r["n_examples"] == 10 * len(SPEAKERS) * 2 == len(heard)
    assert r["digit_accuracy"] == pytest.approx(0.1) and r["speaker_accuracy"] == pytest.approx(1 / len(SPEAKERS))
    assert r["digit_accuracy_three"] == 1.0 and r["digit_accuracy_seven"] == 0.0
    assert all(n > 0 for n in heard)


def test_ctrl_c_while_speaking_keeps_the_audio_so_far(capsys, models_dir, tmp_path, monkeypatch):
    from engines.audio import speech
    from engines.cli import main

    real = speech.speak

    def interrupted(*a, **k):
        n_chunks = 0
        for ev in real(*a, **k):
            yield ev
            if hasattr(ev, "samples"):
                n_chunks += 1
                if n_chunks == 1:  # the user presses Ctrl-C once audio is coming
                    raise KeyboardInterrupt

    monkeypatch.setattr(speech, "speak", interrupted)
    out = tmp_path / "part.wav"
    code = main(["generate", "audio", "--model", MODEL, "--models-dir", models_dir, "--digit", "1", "--seed", "3",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted after" in err
    assert len(read_audio(out).samples) > 0
