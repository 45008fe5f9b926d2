"""The Player's logic (buffer, pre-roll, loop, stop, position, underruns) with a stream that is
driven by hand, plus the device checks that must work on machines with and without sound."""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import pytest

from engines.audio import playback
from engines.audio.playback import PlaybackError, Player, StreamFinished
from engines.errors import ChainruleError

RATE = 8000
BLOCK = 256


class FakeStream:
    """Stands in for sounddevice.OutputStream: `pull(n)` calls the callback for n blocks,
    as PortAudio's audio thread would, and returns what was written (unwritten = NaN)."""

    made: list["FakeStream"] = []

    def __init__(self, *, samplerate, blocksize, channels, dtype, callback):
        assert channels == 1 and dtype == "float32"
        self.samplerate, self.blocksize, self.callback = samplerate, blocksize, callback
        self.started = self.aborted = self.closed = self.finished = False
        FakeStream.made.append(self)

    def start(self):
        self.started = True

    def abort(self):
        self.aborted = True

    def close(self):
        self.closed = True

    @property
    def active(self) -> bool:
        return self.started and not (self.aborted or self.closed or self.finished)

    def pull(self, blocks: int = 1, underflow: bool = False) -> np.ndarray:
        out = []
        for _ in range(blocks):
            if not self.active:
                break
            buf = np.full((self.blocksize, 1), np.nan, np.float32)
            status = type("Flags", (), {"output_underflow": underflow})()
            try:
                self.callback(buf, self.blocksize, None, status)
            except StreamFinished:
                self.finished = True  # PortAudio plays this last block, then the stream ends
            assert not np.isnan(buf).any(), "the callback left part of a block unwritten"
            out.append(buf[:, 0].copy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)


def make_player(**kw) -> tuple[Player, list[FakeStream]]:
    FakeStream.made = []
    kw.setdefault("blocksize", BLOCK)
    return Player(RATE, stream_factory=FakeStream, **kw), FakeStream.made


def signal(n: int, seed: int = 0) -> np.ndarray:
    """Audio with no exact zeros, so silence inserted by the player is told apart."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.05, 0.9, n) * rng.choice([-1, 1], n)).astype(np.float32)


# --- play, loop, stop ---------------------------------------------------------------------------
def test_play_outputs_the_samples_then_ends_the_stream():
    player, streams = make_player()
    x = signal(1000)
    player.play(x)
    (s,) = streams
    assert s.started and s.samplerate == RATE and s.blocksize == BLOCK
    assert player.is_playing and player.position == 0
    first = s.pull(1)
    np.testing.assert_array_equal(first, x[:BLOCK])  # shorter than the pre-roll: starts at once
    assert player.position == BLOCK
    rest = s.pull(10)
    assert s.finished and len(rest) == 3 * BLOCK  # 1000 samples = 4 blocks, the last padded
    np.testing.assert_array_equal(rest[: 1000 - BLOCK], x[BLOCK:])
    assert not rest[1000 - BLOCK:].any()
    assert not player.is_playing and player.state == "done" and player.position == 1000
    assert player.underruns == 0


def test_loop_repeats_until_turned_off_and_the_position_wraps():
    player, streams = make_player()
    x = signal(300, seed=1)
    player.play(x, loop=True)
    out = streams[0].pull(6)  # 1536 samples: five passes and a bit
    np.testing.assert_array_equal(out, np.tile(x, 6)[: 6 * BLOCK])
    assert player.is_playing and player.position == (6 * BLOCK) % 300
    player.loop = False  # the pass being played is finished, then it ends
    tail = streams[0].pull(5)
    assert streams[0].finished
    played = np.concatenate([out, tail])
    n = 6 * BLOCK + (300 - (6 * BLOCK) % 300)
    np.testing.assert_array_equal(played[:n], np.tile(x, 7)[:n])
    assert not played[n:].any() and player.position == 300


def test_stop_is_immediate_and_a_late_callback_plays_silence():
    player, streams = make_player()
    player.play(signal(8000))
    s = streams[0]
    s.pull(2)
    player.stop()
    assert s.aborted and s.closed and not player.is_playing
    assert player.position == 2 * BLOCK  # the cursor stays where playback stopped
    # A callback already under way when stop() came: it writes silence and ends the stream.
    buf = np.ones((BLOCK, 1), np.float32)
    with pytest.raises(StreamFinished):
        s.callback(buf, BLOCK, None, None)
    assert not buf.any()
    player.stop()  # twice is fine
    player.play(signal(10))  # and the player plays again on a fresh stream
    assert len(streams) == 2 and streams[1].started and player.is_playing


def test_playing_anew_replaces_the_old_stream():
    player, streams = make_player()
    player.play(signal(5000, seed=1))
    streams[0].pull(1)
    y = signal(400, seed=2)
    player.play(y)
    assert streams[0].aborted and streams[0].closed
    np.testing.assert_array_equal(streams[1].pull(1), y[:BLOCK])


def test_input_is_clipped_and_nan_is_silence():
    player, streams = make_player()
    player.play(np.array([2.0, -5.0, np.nan, 0.25], np.float32))
    assert streams[0].pull(1)[:4].tolist() == [1.0, -1.0, 0.0, 0.25]


# --- streaming: pre-roll, feeding, underruns -------------------------------------------------------
def test_stream_waits_for_the_preroll_then_plays_everything_fed_in_order():
    player, streams = make_player(preroll_seconds=0.1)  # 800 samples
    player.start_stream()
    s = streams[0]
    x = signal(3000, seed=3)
    assert player.feed(x[:500])
    silent = s.pull(3)
    assert not silent.any() and player.is_buffering and player.position == 0
    assert player.underruns == 0  # waiting for the pre-roll is not an underrun
    assert player.feed(x[500:900])  # 900 >= 800: output starts with the first block
    np.testing.assert_array_equal(s.pull(1), x[:BLOCK])
    assert player.state == "playing" and player.buffered == 900 - BLOCK
    player.feed(x[900:])
    player.end_stream()
    out = s.pull(20)
    assert s.finished
    np.testing.assert_array_equal(out[: 3000 - BLOCK], x[BLOCK:])
    assert player.underruns == 0 and player.position == 3000
    assert not player.feed(x)  # the stream has ended: nothing more is taken


def test_a_starved_stream_plays_silence_counts_an_underrun_and_rebuffers():
    player, streams = make_player(preroll_seconds=0.05)  # 400 samples
    player.start_stream()
    s = streams[0]
    x = signal(2000, seed=4)
    player.feed(x[:400])
    a = s.pull(2)  # 512 asked for, 400 there
    np.testing.assert_array_equal(a[:400], x[:400])
    assert not a[400:].any()
    assert player.underruns == 1 and player.is_buffering and player.position == 400
    assert not s.pull(3).any() and player.underruns == 1  # one dry spell counts once
    player.feed(x[400:700])  # less than a pre-roll: still waiting
    assert not s.pull(1).any()
    player.feed(x[700:1000])
    b = s.pull(2)  # resumes exactly where it ran dry: nothing skipped
    np.testing.assert_array_equal(b, x[400:400 + 2 * BLOCK])
    player.feed(x[1000:])
    player.end_stream()
    c = s.pull(10)
    np.testing.assert_array_equal(c[: 2000 - 400 - 2 * BLOCK], x[400 + 2 * BLOCK:])
    assert player.underruns == 1


def test_end_stream_plays_a_short_tail_without_waiting_for_a_preroll():
    player, streams = make_player(preroll_seconds=1.0)
    player.start_stream()
    x = signal(100, seed=5)
    player.feed(x)
    assert not streams[0].pull(1).any()
    player.end_stream()
    out = streams[0].pull(3)
    np.testing.assert_array_equal(out[:100], x)
    assert streams[0].finished and player.underruns == 0


def test_loop_on_a_stream_starts_over_once_generation_has_ended():
    player, streams = make_player(preroll_seconds=0.0)
    player.start_stream(loop=True)
    x = signal(200, seed=6)
    player.feed(x)
    player.end_stream()
    out = streams[0].pull(3)
    np.testing.assert_array_equal(out, np.tile(x, 4)[: 3 * BLOCK])
    assert player.underruns == 0


class FakeClock:
    """The player's clock, set by hand (seconds)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def simulate(speed: float, seconds: float = 3.0, chunk: int = 800, preroll: float = 0.25, *,
             length_known: bool = False, prompt: int = 0, speed_after: tuple[int, float] | None = None):
    """Generation at `speed` x real time feeding a stream the device drains in real time.

    Events on one virtual clock (the player's clock too): a chunk is fed every
    chunk / (RATE * speed) s, a block is pulled every BLOCK / RATE s. `length_known`: the
    stream is told its length (adaptive pre-roll); `prompt` samples are fed at once first
    (not generated); `speed_after` = (n, s): the generator runs at s x real time once n
    samples are generated. Returns the player, the fed audio and the played audio.
    """
    clock = FakeClock()
    player, streams = make_player(preroll_seconds=preroll, clock=clock)
    total = int(seconds * RATE)
    player.start_stream(total_samples=prompt + total if length_known else None)
    s = streams[0]
    fed = signal(prompt + total, seed=7)
    if prompt:
        player.feed(fed[:prompt], generated=False)
    n_fed, t_feed, t_pull, played = prompt, chunk / (RATE * speed), 0.0, []
    while not s.finished:
        if n_fed < len(fed) and t_feed <= t_pull:
            clock.t = t_feed
            player.feed(fed[n_fed: n_fed + chunk])
            n_fed += chunk
            if n_fed >= len(fed):
                player.end_stream()
            if speed_after is not None and n_fed - prompt >= speed_after[0]:
                speed = speed_after[1]
            t_feed += chunk / (RATE * speed)
        else:
            clock.t = t_pull
            played.append(s.pull(1))
            t_pull += BLOCK / RATE
        assert t_pull < 10 * seconds / min(speed, 1), "the stream never ended"
    return player, fed, np.concatenate(played)


def plays_through(fed: np.ndarray, played: np.ndarray) -> int:
    """Where the sound starts in `played`, asserting it then plays `fed` without a gap."""
    start = int(np.flatnonzero(played)[0])
    np.testing.assert_array_equal(played[start: start + len(fed)], fed)
    assert not played[start + len(fed):].any()
    return start


@pytest.mark.parametrize("speed", [1.05, 2.0, 20.0])
def test_fed_faster_than_real_time_there_are_no_underruns(speed):
    player, fed, played = simulate(speed)
    assert player.underruns == 0
    start = plays_through(fed, played)
    assert start <= int(0.25 * RATE / speed) + 2 * 800 + BLOCK  # the pre-roll, then no gap


def test_fed_slower_than_real_time_it_rebuffers_but_loses_nothing():
    player, fed, played = simulate(0.7)  # the length not known: the fixed pre-roll
    assert player.underruns >= 1
    np.testing.assert_array_equal(played[played != 0], fed)  # every sample, in order


# --- the adaptive pre-roll ----------------------------------------------------------------------
@pytest.mark.parametrize("speed, chunk", [(0.5, 400), (0.5, 800), (0.2, 400), (0.9, 100), (0.85, 800)])
def test_knowing_the_length_a_slow_generator_waits_once_then_plays_through(speed, chunk):
    seconds = 3.0
    player, fed, played = simulate(speed, seconds, chunk, length_known=True)
    assert player.underruns == 0  # one wait at the start, none after
    start = plays_through(fed, played) / RATE
    ideal = seconds / speed - seconds  # generation ends exactly as playback does
    assert ideal <= start <= ideal + (2 * chunk + 2 * BLOCK) / (RATE * speed)
    assert player.generation_rate == pytest.approx(speed * RATE)
    # The same generator with the fixed pre-roll stutters: the adaptive one is what helps.
    assert simulate(speed, seconds, chunk, length_known=False)[0].underruns >= 1


@pytest.mark.parametrize("speed", [1.05, 2.0, 20.0])
def test_knowing_the_length_a_fast_generator_starts_after_the_minimum_preroll(speed):
    player, fed, played = simulate(speed, chunk=400, length_known=True)
    assert player.underruns == 0
    start = plays_through(fed, played)
    minimum = int(0.25 * RATE)
    assert minimum / speed <= start <= minimum / speed + 400 / speed + BLOCK  # 0.25 s buffered, not more


def test_a_prompt_is_played_but_not_counted_as_generated():
    seconds, prompt = 3.0, 4000
    player, fed, played = simulate(0.5, seconds, 400, length_known=True, prompt=prompt)
    assert player.underruns == 0 and player.generation_rate == pytest.approx(0.5 * RATE)
    start = plays_through(fed, played) / RATE
    ideal = seconds / 0.5 - (prompt / RATE + seconds)  # the prompt is a head start
    assert ideal <= start <= ideal + 0.25


def test_after_a_slowdown_the_one_underrun_is_followed_by_a_wait_sized_to_what_is_left():
    # Twice real time for the first second, then half: the start was sized for a fast
    # generator, so it runs dry once; the second wait is sized to the new rate.
    player, fed, played = simulate(2.0, 4.0, 400, length_known=True, speed_after=(8000, 0.5))
    assert player.underruns == 1
    np.testing.assert_array_equal(played[played != 0], fed)  # nothing lost
    sound = np.flatnonzero(played)
    gaps = np.flatnonzero(np.diff(sound) > 1)
    assert len(gaps) == 1  # one gap: it played through after resuming


def test_the_preroll_follows_the_measured_rate():
    clock = FakeClock()
    player, streams = make_player(clock=clock)  # minimum pre-roll 0.25 s = 2000 samples
    player.start_stream(total_samples=16000)
    s = streams[0]
    assert player.generation_rate is None and player.preroll_target == 16000  # not measured: wait
    player.feed(signal(400))  # start-up time before the first chunk is not generation time
    clock.t = 0.1
    player.feed(signal(400))
    assert player.generation_rate == pytest.approx(4000)  # 400 samples in 0.1 s: half real time
    target = 16000 // 2 + 400 + BLOCK  # R (1 - r / sr), one chunk and one block
    assert player.preroll_target == target and player.is_buffering
    assert player.starts_in == pytest.approx((target - 800) / 4000)
    assert not s.pull(2).any() and player.is_buffering  # 800 < target: silence
    while player.buffered < target:  # at half real time it is reached 2.1 s later
        clock.t += 0.1
        player.feed(signal(400))
    assert clock.t == pytest.approx(0.1 + (target - 800) / 400 * 0.1, abs=0.11)
    assert s.pull(1).any() and player.state == "playing" and player.starts_in is None
    # Faster than real time it only waits for the minimum pre-roll; slower, never more than R.
    player.start_stream(total_samples=16000)
    clock.t = 10.0
    player.feed(signal(400))
    clock.t = 10.01
    player.feed(signal(400))  # 40,000 samples/s
    assert player.preroll_target == 2000
    player.start_stream(total_samples=1000)
    player.feed(signal(400))
    clock.t = 20.0
    player.feed(signal(400))  # very slow: everything (1000) before it starts
    assert player.preroll_target == 1000


def test_the_preroll_after_an_underrun_counts_what_is_left_and_the_length_can_be_corrected():
    clock = FakeClock()
    player, streams = make_player(clock=clock, preroll_seconds=0.0)
    player.start_stream(total_samples=10000)
    s = streams[0]
    for k in range(10):  # exactly real time: 800 samples every 0.1 s
        clock.t = 0.1 * k
        player.feed(signal(800, seed=k))
    assert player.generation_rate == pytest.approx(RATE) and player.preroll_target == 0  # no wait
    s.pull(40)  # 10240 samples asked for, 8000 there: one underrun
    assert player.underruns == 1 and player.is_buffering and player.position == 8000
    clock.t = 1.6  # the next chunk 0.7 s later: the generator slowed down
    player.feed(signal(800, seed=11))
    r = player.generation_rate
    assert r == pytest.approx((8800 - 800) / 1.6)  # since the first chunk (all within the 2 s window)
    left = 10000 - 8000
    assert player.preroll_target == min(left, int(math.ceil(left * (1 - r / RATE))) + 800 + BLOCK)
    player.set_stream_length(20000)  # the engine makes more than first asked
    left = 20000 - 8000
    assert player.preroll_target == int(math.ceil(left * (1 - r / RATE))) + 800 + BLOCK
    player.set_stream_length(None)  # not known: the fixed pre-roll (0 here)
    with pytest.raises(ValueError, match="total_samples"):
        player.set_stream_length(-1)


def test_without_a_length_the_fixed_preroll_is_kept_and_the_rate_is_still_measured():
    clock = FakeClock()
    player, streams = make_player(clock=clock, preroll_seconds=0.1)
    player.start_stream()
    player.feed(signal(400))
    clock.t = 1.0
    player.feed(signal(400))
    assert player.generation_rate == pytest.approx(400) and player.preroll_target == 800
    assert streams[0].pull(1).any()  # 800 buffered: starts, however slow the generator


# --- devices --------------------------------------------------------------------------------------
def test_availability_never_raises_and_gives_a_reason():
    ok, reason = Player().availability()
    assert isinstance(ok, bool) and isinstance(reason, str) and reason
    ok2, _ = playback.output_availability(8000)
    assert ok2 == ok


def test_availability_without_portaudio_or_a_device(monkeypatch):
    def no_portaudio():
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(playback, "_import_sounddevice", no_portaudio)
    ok, reason = Player().availability()
    assert not ok and "PortAudio" in reason and "libportaudio2" in reason
    with pytest.raises(PlaybackError, match="PortAudio"):
        Player().play(np.zeros(10, np.float32))

    monkeypatch.setitem(sys.modules, "sounddevice", None)  # not installed at all
    monkeypatch.setattr(playback, "_import_sounddevice", lambda: __import__("sounddevice"))
    ok, reason = Player().availability()
    assert not ok and "sounddevice package is not installed" in reason

    class NoDevice:
        @staticmethod
        def query_devices(kind=None):
            raise ValueError("No output device available")

    monkeypatch.setattr(playback, "_import_sounddevice", lambda: NoDevice)
    assert Player().availability() == (False, "no audio output device was found")


def test_a_stream_that_cannot_open_raises_a_playback_error_and_leaves_the_player_idle():
    def broken(**kw):
        raise RuntimeError("Device unavailable [PaErrorCode -9985]")

    player = Player(RATE, stream_factory=broken)
    with pytest.raises(PlaybackError, match="cannot open the audio output: Device unavailable") as info:
        player.play(np.zeros(10, np.float32))
    assert isinstance(info.value, ChainruleError)
    assert not player.is_playing and player.state == "idle"
    assert not player.feed(np.zeros(10, np.float32))


def test_a_device_at_another_rate_gets_resampled_audio_and_the_position_stays_in_sound_samples():
    player, streams = make_player(output_rate=16000)
    t = np.arange(4000) / RATE
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    player.play(x)
    s = streams[0]
    assert s.samplerate == 16000
    out = s.pull(40)
    assert s.finished and player.position == 4000
    body = out[: 8000]
    spec = np.abs(np.fft.rfft(body * np.hanning(len(body))))
    assert np.fft.rfftfreq(len(body), 1 / 16000)[int(np.argmax(spec))] == pytest.approx(440, abs=3)
    # Streaming at another rate keeps every sample too (the resampler's tail comes at the end).
    player.start_stream()
    for i in range(0, 4000, 800):
        player.feed(x[i: i + 800])
    player.end_stream()
    streamed = streams[1].pull(60)
    assert streams[1].finished and player.underruns == 0
    assert abs(int(np.count_nonzero(np.abs(streamed) > 1e-4)) - 8000) < 64


def test_the_callback_survives_a_bug_by_stopping(monkeypatch):
    player, streams = make_player()
    player.play(signal(1000))
    monkeypatch.setattr(player, "_fill", lambda *a: 1 / 0)
    out = streams[0].pull(2)
    assert streams[0].finished and not out.any() and not player.is_playing


def test_a_real_output_stream_plays_when_there_is_a_device():
    """On a machine with an output (CI's null ALSA device too) a short sound plays to its end."""
    player = Player(RATE)
    ok, reason = player.availability()
    if not ok:
        pytest.skip(f"no audio output here: {reason}")
    player.play(np.zeros(400, np.float32))  # 50 ms of silence
    deadline = time.monotonic() + 5
    while player.is_playing and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not player.is_playing and player.position == 400
    player.stop()
