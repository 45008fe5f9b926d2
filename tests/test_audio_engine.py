"""The audio engine (numpy + onnxruntime): model loading, seeded cached generation in chunks, priming,
batches, scoring and the surprise track, against the full network and the torch module."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engines.audio import mulaw
from engines.audio.generate import (MAX_BATCH, MAX_SECONDS, CachedStepper, choose, generate_audio,
                                    generate_audio_chunks)
from engines.audio.model import load_audio_model
from engines.audio.scoring import SURPRISE_WINDOW, score_audio, score_classes, score_clips, smooth_surprise
from engines.errors import InputError, ModelLoadError
from engines.registry import read_card
from tests.audio_models import SPEAKERS, export_model_dir, make_wavenet

TOL = 1e-4


@pytest.fixture(scope="module")
def torch_model():
    pytest.importorskip("torch")  # the tiny model is built in torch; the tests without it still run
    return make_wavenet(seed=0)


@pytest.fixture(scope="module")
def model(torch_model, tmp_path_factory):
    folder = export_model_dir(torch_model, tmp_path_factory.mktemp("models"), "tiny-wavenet")
    return load_audio_model(read_card(folder))


def torch_logprobs(torch_model, classes, digit_id, speaker_id) -> np.ndarray:
    """ln p of each class with silence before it, the trainer's way (train_wavenet.clip_logprobs)."""
    from engines.training.train_wavenet import clip_logprobs

    return clip_logprobs(torch_model, np.asarray(classes, np.int64), digit_id, speaker_id)


# --- the model ---------------------------------------------------------------------------------

def test_model_reads_its_card(model):
    assert model.sample_rate == 8000 and model.levels == 256
    assert model.speakers == SPEAKERS and model.n_digits == 10
    assert model.receptive_field == 7 and model.dilations == [1, 2, 1, 2]
    assert model.none_digit == 10 and model.none_speaker == len(SPEAKERS)
    assert model.big_layers == [1, 3] and model.small_layers == [0, 2]


def test_digit_and_speaker_values(model):
    assert model.digit_value(None) == model.none_digit and model.digit_value(7) == 7
    assert model.speaker_value(None) == model.none_speaker
    assert model.speaker_value("LUCAS") == SPEAKERS.index("lucas") == model.speaker_value(" lucas ")
    with pytest.raises(InputError, match=r"unknown speaker 'nobody'.*george, jackson, lucas"):
        model.speaker_value("nobody")
    with pytest.raises(InputError, match=r"digit 10 is out of range.*0-9"):
        model.digit_value(10)
    with pytest.raises(InputError, match="digit -1"):
        model.digit_value(-1)
    with pytest.raises(InputError, match="not a whole number"):
        model.digit_value(2.5)


def test_a_card_with_a_wrong_receptive_field_is_refused(torch_model, tmp_path):
    folder = export_model_dir(torch_model, tmp_path, "broken")
    card = json.loads((folder / "card.json").read_text())
    card["architecture"]["receptive_field"] = 99
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="receptive_field 99"):
        load_audio_model(read_card(folder))


# --- generation --------------------------------------------------------------------------------

def test_seeded_generation_reproduces_and_seeds_differ(model):
    a = generate_audio(model, seconds=0.02, seed=5, digit=3, speaker="george")
    b = generate_audio(model, seconds=0.02, seed=5, digit=3, speaker="george")
    c = generate_audio(model, seconds=0.02, seed=6, digit=3, speaker="george")
    assert a.samples.shape == (1, 160) and a.samples.dtype == np.float32 and a.seed == 5
    np.testing.assert_array_equal(a.samples, b.samples)
    np.testing.assert_array_equal(a.logprobs, b.logprobs)
    assert not np.array_equal(a.classes, c.classes)
    np.testing.assert_array_equal(a.samples, mulaw.decode(a.classes))


@pytest.mark.parametrize("chunk", [1, 2, 3, 50, 800])
def test_chunks_concatenated_equal_one_shot(model, chunk):
    whole = generate_audio(model, seconds=0.0125, seed=9, digit=1, batch=2)
    chunks = list(generate_audio_chunks(model, seconds=0.0125, seed=9, digit=1, batch=2, chunk_samples=chunk))
    assert [c.start for c in chunks] == list(range(0, 100, chunk))
    assert all(c.samples.shape[1] == min(chunk, 100 - c.start) for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.classes for c in chunks], axis=1), whole.classes)
    np.testing.assert_array_equal(np.concatenate([c.logprobs for c in chunks], axis=1), whole.logprobs)


def test_generation_is_lazy_and_stops_when_closed(model, monkeypatch):
    calls = []
    original = CachedStepper.sample
    monkeypatch.setattr(CachedStepper, "sample", lambda self, *a: calls.append(1) or original(self, *a))
    gen = generate_audio_chunks(model, seconds=1.0, seed=0, chunk_samples=10)
    assert calls == []  # nothing runs before the first chunk is asked for
    first = next(gen)
    gen.close()
    assert first.samples.shape == (1, 10) and len(calls) == 5  # 10 samples in calls of 2 (the step block)


def test_logprobs_from_generation_equal_scoring_the_result(model, torch_model):
    g = generate_audio(model, seconds=0.02, seed=1, digit=4, speaker="jackson", batch=2, temperature=0.8)
    for row in range(2):
        s = score_audio(model, g.samples[row], digit=4, speaker="jackson")
        np.testing.assert_array_equal(s.classes, g.classes[row])
        np.testing.assert_allclose(s.logprobs, g.logprobs[row], atol=TOL)
        ref = torch_logprobs(torch_model, g.classes[row], 4, SPEAKERS.index("jackson"))
        np.testing.assert_allclose(s.logprobs, ref, atol=TOL)
        assert s.total_logprob == pytest.approx(float(g.logprobs[row].sum()), abs=1e-3)


def test_prompt_primes_the_state(model, torch_model):
    """The continuation's log-probs equal scoring prompt + continuation (the prompt's part is the
    prompt's own score), with and without conditions, for a prompt longer than the buffers."""
    prompt = np.sin(np.arange(300) / 5.0).astype(np.float32) * 0.4
    for digit, speaker in [(None, None), (8, "lucas")]:
        g = generate_audio(model, seconds=0.01, seed=2, prompt=prompt, digit=digit, speaker=speaker)
        whole = np.concatenate([mulaw.encode(prompt), g.classes[0]])
        lp = score_classes(model, whole, model.digit_value(digit), model.speaker_value(speaker))
        np.testing.assert_allclose(lp[300:], g.logprobs[0], atol=TOL)
        ref = torch_logprobs(torch_model, whole, model.digit_value(digit), model.speaker_value(speaker))
        np.testing.assert_allclose(lp, ref, atol=TOL)
    short = generate_audio(model, seconds=0.005, seed=2, prompt=prompt[:3])
    lp = score_classes(model, np.concatenate([mulaw.encode(prompt[:3]), short.classes[0]]), 10, 3)
    np.testing.assert_allclose(lp[3:], short.logprobs[0], atol=TOL)
    plain = generate_audio(model, seconds=0.01, seed=2)
    assert not np.array_equal(plain.classes, generate_audio(model, seconds=0.01, seed=2, prompt=prompt).classes)


def test_batch_rows_are_different_variations(model):
    g = generate_audio(model, seconds=0.02, seed=3, batch=4)
    assert g.samples.shape == (4, 160)
    rows = {tuple(r) for r in g.classes}
    assert len(rows) == 4


def test_greedy_rows_agree_and_match_the_naive_path(model):
    g = generate_audio(model, seconds=0.01, seed=3, batch=3, temperature=0)
    assert (g.classes == g.classes[0]).all()
    naive = generate_audio(model, seconds=0.01, seed=3, batch=3, temperature=0, method="naive")
    np.testing.assert_array_equal(naive.classes, g.classes)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 1.7])
def test_cached_and_naive_paths_draw_the_same_samples(model, temperature):
    cached = generate_audio(model, seconds=0.01, seed=4, digit=0, speaker="george", batch=2, temperature=temperature)
    naive = generate_audio(model, seconds=0.01, seed=4, digit=0, speaker="george", batch=2, temperature=temperature,
                           method="naive")
    np.testing.assert_array_equal(naive.classes, cached.classes)
    np.testing.assert_allclose(naive.logprobs, cached.logprobs, atol=TOL)


def test_low_temperature_draws_likelier_samples(model):
    hot = generate_audio(model, seconds=0.05, seed=0, temperature=1.5, batch=4)
    cold = generate_audio(model, seconds=0.05, seed=0, temperature=0.3, batch=4)
    assert cold.logprobs.mean() > hot.logprobs.mean() + 0.5


def test_host_sampler_is_inverse_cdf():
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]]))
    for u, want in [(0.0, 0), (0.09, 0), (0.11, 1), (0.35, 2), (0.61, 3), (0.999, 3)]:
        c, lp = choose(logits, np.array([u]), 1.0)
        assert c[0] == want and lp[0] == pytest.approx(math.log([0.1, 0.2, 0.3, 0.4][want]), abs=1e-6)
    c, _ = choose(logits, np.array([0.0]), 0.0)
    assert c[0] == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"seconds": 0}, "seconds = 0 is invalid"),
    ({"seconds": -1.0}, "seconds = -1.0 is invalid"),
    ({"seconds": float("nan")}, "seconds = nan is invalid"),
    ({"seconds": MAX_SECONDS * 10}, "too long"),
    ({"temperature": -0.5}, "temperature = -0.5 is invalid"),
    ({"temperature": float("inf")}, "temperature = inf is invalid"),
    ({"batch": 0}, "batch = 0 is invalid"),
    ({"batch": MAX_BATCH + 1}, "batch"),
    ({"seed": -3}, "seed = -3 is invalid"),
    ({"digit": 11}, "digit 11 is out of range"),
    ({"speaker": "zed"}, "unknown speaker 'zed'"),
    ({"prompt": np.zeros((2, 10), np.float32)}, "mono"),
    ({"prompt": np.zeros(0, np.float32)}, "empty"),
    ({"prompt": np.array([0.1, np.nan], np.float32)}, "NaN"),
    ({"chunk_samples": 0}, "chunk_samples"),
])
def test_bad_settings_are_refused_before_any_work(model, kwargs, message):
    args = {"seconds": 0.01, "seed": 0, **kwargs}
    with pytest.raises(InputError, match=message):
        generate_audio_chunks(model, **args)  # raised on the call, not on the first chunk


# --- scoring -----------------------------------------------------------------------------------

def test_scoring_matches_the_trainer(model, torch_model):
    x = np.random.default_rng(0).uniform(-1, 1, 333).astype(np.float32)
    s = score_audio(model, x, digit=2, speaker="george")
    ref = torch_logprobs(torch_model, mulaw.encode(x), 2, 0)
    np.testing.assert_allclose(s.logprobs, ref, atol=TOL)
    assert s.logprobs.dtype == np.float64 and s.n == 333
    assert s.total_logprob == pytest.approx(ref.sum(), abs=1e-3)
    assert s.bits_per_sample == pytest.approx(-ref.sum() / math.log(2) / 333, abs=1e-5)
    # conditions change the score; none is a condition of its own
    assert score_audio(model, x).total_logprob != pytest.approx(s.total_logprob)


def test_segments_and_batches_give_the_same_numbers(model):
    rng = np.random.default_rng(1)
    clips = [rng.integers(0, 256, n) for n in (1, 5, 40, 90, 13)]
    one = [score_classes(model, c, 3, 1) for c in clips]
    segmented = [score_classes(model, c, 3, 1, segment=7) for c in clips]
    batched = score_clips(model, clips, [3] * 5, [1] * 5)
    for a, b, c in zip(one, segmented, batched):
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(a, c, atol=1e-5)
    per_clip = score_clips(model, clips[:2], [3, 4], [1, 2])
    np.testing.assert_allclose(per_clip[1], score_classes(model, clips[1], 4, 2), atol=1e-5)


def test_surprise_track_is_a_centred_moving_average():
    bits = np.zeros(400)
    bits[200] = SURPRISE_WINDOW  # one spike: spread evenly over the window around it
    track = smooth_surprise(bits)
    assert track.shape == (400,)
    assert track.sum() == pytest.approx(SURPRISE_WINDOW)
    assert np.argmax(track) in range(200 - SURPRISE_WINDOW // 2, 200 + SURPRISE_WINDOW // 2 + 1)
    assert np.count_nonzero(track) == SURPRISE_WINDOW
    np.testing.assert_allclose(smooth_surprise(np.full(50, 3.0)), 3.0)  # ends use the part inside
    assert smooth_surprise(np.array([2.0])).tolist() == [2.0]


def test_score_audio_surprise_track(model):
    x = np.random.default_rng(2).uniform(-0.3, 0.3, 500).astype(np.float32)
    s = score_audio(model, x)
    np.testing.assert_allclose(s.surprise_bits, smooth_surprise(-s.logprobs / math.log(2)))


@pytest.mark.parametrize("audio, message", [
    (np.zeros(0, np.float32), "empty"),
    (np.zeros((2, 5), np.float32), "mono"),
    (np.array([0.0, np.inf], np.float32), "NaN or infinite"),
])
def test_bad_audio_to_score(model, audio, message):
    with pytest.raises(InputError, match=message):
        score_audio(model, audio)


def test_torch_is_not_imported_by_the_engine():
    import subprocess
    import sys

    code = ("import sys; import engines.audio.generate, engines.audio.scoring, engines.audio.commands, "
            "engines.audio.bench; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
