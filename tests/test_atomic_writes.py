"""Writes that survive interrupts and never clobber what they should not (issue 13, class 5).

* An interrupt at any moment of an atomic write (Ctrl-C or SIGTERM, delivered as a real signal at
  every line the write runs, or raised by the writer, the chmod, the fsync or the rename) leaves
  no temporary file, and the target holds the old content or the new, whole.
* An existing output keeps its permission bits; a target that is a link, FIFO, device or folder is
  refused; very long names work (the temporary name is cut to fit); data is fsynced before the rename.
* SIGTERM stops `chainrule` the way Ctrl-C does: what was generated is kept (text and audio), no
  temporary file is left, one line is said, and the exit status is 143 (130 for Ctrl-C).
* The exporters and the BPE trainer write through the same atomic path.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engines import atomic
from engines.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = str(Path(__file__).parent / "fixtures")
posix_only = pytest.mark.skipif(os.name != "posix", reason="signals, FIFOs and permission bits are POSIX")


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@contextlib.contextmanager
def _signal_handlers():
    """Ctrl-C raises KeyboardInterrupt and SIGTERM raises Terminated, as under `chainrule`."""
    from engines.cli import _raise_terminated

    old = signal.signal(signal.SIGINT, signal.default_int_handler), signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])


# --- an interrupt at every moment ---------------------------------------------------

class _SignalAtLine:
    """A tracer that sends a real signal to this process at the n-th line run inside engines/atomic.py
    or contextlib (whose __exit__ runs our clean-up): Python then handles it where a real Ctrl-C would
    land, so lines where signals are held back are tested as they really behave."""

    FILES = (os.path.abspath(atomic.__file__), os.path.abspath(contextlib.__file__))

    def __init__(self, n: int, signum: int):
        self.n, self.signum, self.seen, self.sent, self.where = n, signum, 0, False, None

    def __call__(self, frame, event, arg):
        if os.path.abspath(frame.f_code.co_filename) not in self.FILES:
            return None
        if event == "line" and not self.sent:
            self.seen += 1
            if self.seen == self.n:
                self.sent, self.where = True, f"{frame.f_code.co_name} line {frame.f_lineno}"
                os.kill(os.getpid(), self.signum)
        return self


@posix_only
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_at_any_moment_of_a_write_leaves_no_temporary_file(tmp_path, signum):
    """Fails on the old atomic_path: a signal just after mkstemp (before its try) left `.card.XXXX.json`."""
    target = tmp_path / "card.json"
    target.write_text("old")
    interrupted_at = []
    with _signal_handlers():
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for n in range(1, 1000):
            tracer = _SignalAtLine(n, signum)
            sys.settrace(tracer)
            try:
                atomic.write_text(target, "new")
            except KeyboardInterrupt:
                interrupted_at.append(n)
            finally:
                sys.settrace(None)
            if _files(tmp_path) != ["card.json"]:
                # an interrupt inside contextlib's __exit__ leaves the clean-up to the generator's close;
                # collected only when needed: a full collection of the test process's heap is slow
                gc.collect()
            assert _files(tmp_path) == ["card.json"], f"a signal at {tracer.where} left a temporary file"
            assert target.read_text() in ("old", "new")
            assert signal.getsignal(signum) is handlers[signum], f"a signal at {tracer.where} left its handler swapped"
            if not tracer.sent:
                break  # the write ran to the end before the n-th line: every moment has been tried
            target.write_text("old")
    assert len(interrupted_at) > 20  # the signal really stopped the write, at many different moments
    assert atomic._LIVE == set()


@posix_only
def test_signal_right_after_mkstemp_removes_the_temporary_file(tmp_path, monkeypatch):
    """The moment the issue names: Ctrl-C right after the temporary file is created."""
    real = atomic.tempfile.mkstemp

    def mkstemp_then_ctrl_c(*args, **kwargs):
        made = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return made

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp_then_ctrl_c)
    target = tmp_path / "out.txt"
    with _signal_handlers(), pytest.raises(KeyboardInterrupt):
        atomic.write_text(target, "x")
        time.sleep(0.5)  # not reached when the interrupt lands inside the write, as it must
    gc.collect()
    assert _files(tmp_path) == []


@pytest.mark.parametrize("where", ["writer", "chmod", "fsync", "replace"])
def test_interrupt_raised_at_each_step_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, where):
    target = tmp_path / "sample.txt"
    target.write_text("old")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where != "writer":
        monkeypatch.setattr(os, where, interrupt)
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("new")
            if where == "writer":
                interrupt()
    monkeypatch.undo()
    assert _files(tmp_path) == ["sample.txt"] and target.read_text() == "old"


def test_a_failing_rename_is_one_input_error_and_no_temporary(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(InputError, match="cannot write .*out.json: No space left on device"):
        atomic.write_json(tmp_path / "out.json", {"a": 1})
    monkeypatch.undo()
    assert _files(tmp_path) == []


def test_the_file_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) if os.path.exists("/proc/self/fd")
                      else fd))
        return real_fsync(fd)

    def replace(a, b):
        calls.append(("replace", os.path.basename(a)))
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic.write_text(tmp_path / "model.txt", "data")
    kinds = [c[0] for c in calls]
    assert kinds.index("fsync") < kinds.index("replace")  # the data is on disk before it takes the name
    assert calls[kinds.index("fsync")][1] == calls[kinds.index("replace")][1]  # the temporary file itself


# --- what a write must not clobber ---------------------------------------------------

@posix_only
@pytest.mark.parametrize("mode", [0o640, 0o600, 0o444, 0o755])
def test_an_existing_file_keeps_its_permission_bits(tmp_path, mode):
    target = tmp_path / "card.json"
    target.write_text("{}")
    target.chmod(mode)
    atomic.write_json(target, {"id": "x"})
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert json.loads(target.read_text()) == {"id": "x"}


@posix_only
def test_a_symlink_target_is_refused_and_left_alone(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("keep")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    with pytest.raises(InputError, match="symbolic link"):
        atomic.write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "keep" and _files(tmp_path) == ["link.txt", "real.txt"]


@posix_only
def test_a_fifo_target_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="FIFO"):
        atomic.write_bytes(fifo, b"x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and _files(tmp_path) == ["pipe.wav"]


@posix_only
def test_a_device_target_is_refused(tmp_path):
    # A null device of our own, not /dev/null: a writer that renames over its target (as the old
    # atomic_path did) would replace the system's /dev/null with a plain file.
    device = tmp_path / "null"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, AttributeError, OSError):
        pytest.skip("making a device node needs root")
    with pytest.raises(InputError, match="device"):
        atomic.write_text(device, "x")
    assert stat.S_ISCHR(os.lstat(device).st_mode) and _files(tmp_path) == ["null"]


def test_a_folder_target_is_refused(tmp_path):
    (tmp_path / "out.png").mkdir()
    with pytest.raises(InputError, match="folder"):
        atomic.write_bytes(tmp_path / "out.png", b"x")
    assert (tmp_path / "out.png").is_dir() and _files(tmp_path) == ["out.png"]


@pytest.mark.parametrize("stem_len", [200, 240, 250])
def test_a_very_long_target_name_works(tmp_path, stem_len):
    """Fails on the old atomic_path: `.STEM.XXXXXXXX.json` is longer than the 255-byte name limit."""
    target = tmp_path / ("s" * stem_len + ".json")
    atomic.write_json(target, {"n": 1})
    assert json.loads(target.read_text()) == {"n": 1} and _files(tmp_path) == [target.name]


def test_a_long_name_of_multibyte_characters_works(tmp_path):
    target = tmp_path / ("é" * 125 + ".txt")  # 250 + 4 bytes
    atomic.write_text(target, "ok")
    assert target.read_text() == "ok" and _files(tmp_path) == [target.name]


def test_a_name_over_the_limit_is_one_input_error(tmp_path):
    with pytest.raises(InputError, match="longer than"):
        atomic.write_text(tmp_path / ("x" * 300 + ".txt"), "x")
    assert _files(tmp_path) == []


def test_a_write_into_a_read_only_folder_is_one_input_error(tmp_path):
    if os.name != "posix" or os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(InputError, match="cannot write"):
            atomic.write_text(folder / "x.txt", "x")
    finally:
        folder.chmod(0o755)


# --- the exporters and the BPE trainer write atomically ------------------------------

def _interrupting(real):
    def call(*args, **kwargs):
        real(*args, **kwargs)  # the whole file is written under its temporary name ...
        raise KeyboardInterrupt  # ... and Ctrl-C lands before the rename
    return call


def test_an_interrupted_bpe_training_keeps_the_old_tokenizer_and_no_temporary(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from tokenizers import Tokenizer

    from engines.training.bpe_data import train_bpe

    path = tmp_path / "tokenizer.json"
    path.write_text("old")
    monkeypatch.setattr(Tokenizer, "save", _interrupting(Tokenizer.save))
    with pytest.raises(KeyboardInterrupt):
        train_bpe(["the cat sat on the mat"] * 20, 300, path)
    assert _files(tmp_path) == ["tokenizer.json"] and path.read_text() == "old"
    monkeypatch.undo()
    train_bpe(["the cat sat on the mat"] * 20, 300, path)
    assert json.loads(path.read_text())["model"]["type"] == "BPE" and _files(tmp_path) == ["tokenizer.json"]


def test_an_interrupted_wavenet_export_keeps_the_old_graphs_and_no_temporary(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import onnx

    from engines.training import export_wavenet
    from tests.audio_models import make_wavenet

    model = make_wavenet()
    folder = tmp_path / "wn"
    export_wavenet.export_onnx(model, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.setattr(export_wavenet.onnx, "save_model", _interrupting(onnx.save_model))
    with pytest.raises(KeyboardInterrupt):
        export_wavenet.export_onnx(model, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temporary, nothing half-replaced


def test_an_interrupted_gpt_export_writes_no_temporary(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import onnx

    from engines.training import export_gpt
    from engines.training.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    monkeypatch.setattr(export_gpt.onnx, "save_model", _interrupting(onnx.save_model))
    with pytest.raises(KeyboardInterrupt):
        export_gpt.export_onnx(model, tmp_path / "model.onnx")
    monkeypatch.setattr(Path, "write_bytes", _interrupting(Path.write_bytes))
    with pytest.raises(KeyboardInterrupt):
        export_gpt.write_tokenizer({"tokenizer": {"json": "{}"}}, tmp_path / "tokenizer.json")
    assert _files(tmp_path) == []


def test_export_checkpoint_writes_leave_only_the_model_files(tmp_path):
    """The GPT exporter through its atomic writes: the folder holds the model and nothing else."""
    pytest.importorskip("torch")
    from engines.training import export_gpt
    from engines.training.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    export_gpt.export_onnx(model, tmp_path / "model.onnx")
    export_gpt.write_tokenizer({"tokenizer": {"json": "{}"}}, tmp_path / "tokenizer.json")
    assert _files(tmp_path) == ["model.onnx", "tokenizer.json"]
    assert stat.S_IMODE((tmp_path / "model.onnx").stat().st_mode) == 0o666 & ~atomic._UMASK


# --- SIGTERM and Ctrl-C stop `chainrule` cleanly --------------------------------------

def _hidden_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@posix_only
@pytest.mark.parametrize("signum, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_text_generation_keeps_the_samples_says_one_line_and_exits(tmp_path, signum, code, word):
    """A real `chainrule generate text` process, stopped once its first sample is on disk. Fails on the old
    CLI: SIGTERM killed it (exit -15) with nothing written, as Ctrl-C wrote nothing before the end."""
    out = tmp_path / "s.txt"
    env = {k: v for k, v in os.environ.items() if k != "CHAINRULE_MODELS_DIR"}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")  # platformdirs: not the user's own models folder
    proc = subprocess.Popen(
        [sys.executable, "-m", "engines", "generate", "text", "--model", "tiny-gpt2-optimum", "--models-dir", FIXTURES,
         "--prompt", "ROMEO:", "--max-new-tokens", "120", "--count", "1000", "--seed", "1", "--out", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = tmp_path / "s_1.txt"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.exists(), proc.communicate(timeout=30)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    lines = stderr.strip().splitlines()
    assert proc.returncode == code, stderr
    assert len(lines) == 1 and lines[0].startswith(f"chainrule: {word} after "), stderr
    assert "wrote what was generated so far to" in lines[0] and "Traceback" not in stderr
    assert stdout == ""  # --out: the samples are in the files
    kept = sorted(p for p in tmp_path.glob("s_*.txt"))
    assert len(kept) >= 1 and all(p.read_text(encoding="utf-8") for p in kept)
    assert _hidden_files(tmp_path) == []  # no temporary file left behind


@posix_only
def test_sigterm_during_audio_generation_keeps_the_audio(capsys, tmp_path, monkeypatch):
    """SIGTERM (a real signal) while the second chunk is made: the first is written, one line, exit 143."""
    pytest.importorskip("torch")
    import engines.audio.generate as commands  # where the audio runner draws its chunks from
    from engines.audio.wav import read_audio
    from engines.cli import main
    from tests.audio_models import export_model_dir, make_wavenet

    models = tmp_path / "models"
    export_model_dir(make_wavenet(), models, "tiny-wavenet")
    real = commands.generate_audio_chunks

    def terminated_after_one_chunk(*args, **kwargs):
        chunks = real(*args, **kwargs)
        yield next(chunks)
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` from another shell
        yield from chunks

    monkeypatch.setattr(commands, "generate_audio_chunks", terminated_after_one_chunk)
    out = tmp_path / "a.wav"
    before = signal.getsignal(signal.SIGTERM)
    code = main(["generate", "audio", "--model", "tiny-wavenet", "--models-dir", str(models), "--seconds", "0.5",
                 "--seed", "2", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 143
    assert len(err) == 1 and err[0].startswith("chainrule: terminated after ") and "wrote what was generated" in err[0]
    assert 0 < read_audio(out).samples.size < 4000
    assert _hidden_files(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is before  # main() put the handler it found back


@posix_only
def test_ctrl_c_during_audio_generation_is_one_line(capsys, tmp_path, monkeypatch):
    """The audio command used to print its own line and the CLI a second one."""
    pytest.importorskip("torch")
    import engines.audio.generate as commands  # where the audio runner draws its chunks from
    from engines.cli import main
    from tests.audio_models import export_model_dir, make_wavenet

    models = tmp_path / "models"
    export_model_dir(make_wavenet(), models, "tiny-wavenet")
    real = commands.generate_audio_chunks

    def interrupted_after_one_chunk(*args, **kwargs):
        chunks = real(*args, **kwargs)
        yield next(chunks)
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "generate_audio_chunks", interrupted_after_one_chunk)
    code = main(["generate", "audio", "--model", "tiny-wavenet", "--models-dir", str(models), "--seconds", "0.5",
                 "--seed", "2", "--out", str(tmp_path / "a.wav")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and len(err) == 1 and err[0].startswith("chainrule: interrupted after "), err


def test_ctrl_c_during_text_generation_without_out_prints_what_was_generated(capsys, monkeypatch):
    import engines.text.session as session  # the runner (engines.text.request.run) steps through it
    from engines.cli import main

    real = session.stream_tokens

    def interrupted_after_five_tokens(*args, **kwargs):
        for i, ev in enumerate(real(*args, **kwargs)):
            if i == 5:
                raise KeyboardInterrupt
            yield ev

    monkeypatch.setattr(session, "stream_tokens", interrupted_after_five_tokens)
    code = main(["generate", "text", "--model", "tiny-gpt2-optimum", "--models-dir", FIXTURES, "--seed", "3",
                 "--prompt", "ROMEO:", "--max-new-tokens", "50"])
    out, err = capsys.readouterr()
    assert code == 130 and err.strip().splitlines() == ["chainrule: interrupted after 0 of 1 samples: printed what "
                                                        "was generated so far"]
    assert out.strip()


# --- density sampling and beam search keep what was finished --------------------------

def _density_groups_of_two(monkeypatch, stop):
    """`generate image` with a density model drawing groups of 2 samples; `stop()` runs when the second
    group starts (after the first group's DensityDone has been handed on)."""
    import engines.density.request as commands  # the request runner draws the groups

    real, calls = commands.sample_events, []
    monkeypatch.setattr(commands, "SAMPLE_GROUP", 2)

    def stopping(*args, **kwargs):
        events = real(*args, **kwargs)
        calls.append(kwargs.get("count"))

        def run():
            for i, event in enumerate(events):
                if len(calls) == 2 and i == 5:
                    stop()
                yield event
        return run()

    monkeypatch.setattr(commands, "sample_events", stopping)
    return calls


@posix_only
def test_sigterm_during_density_sampling_keeps_the_finished_samples(capsys, tmp_path, monkeypatch):
    """SIGTERM (a real signal) while the second group of samples is drawn: the first group is on disk,
    whole and as an uninterrupted run draws it; one line names the files; exit 143. Fails on the old
    command: it drew every sample together and wrote none before the end, so it kept nothing."""
    from engines.cli import main
    from engines.image.png import read_image

    whole = tmp_path / "whole"
    whole.mkdir()
    assert main(["generate", "image", "--model", "bmnist-nade", "--count", "3", "--seed", "7",
                 "--out", str(whole / "s.png")]) == 0
    capsys.readouterr()
    calls = _density_groups_of_two(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGTERM))
    code = main(["generate", "image", "--model", "bmnist-nade", "--count", "5", "--seed", "7",
                 "--out", str(tmp_path / "s.png")])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 143 and calls == [2, 2], (code, calls, err)
    assert lines == [f"chainrule: terminated after 2 of 5 samples: wrote the finished samples to "
                     f"{tmp_path / 's_1.png'}, {tmp_path / 's_2.png'}"], err
    assert out == ""
    assert sorted(p.name for p in tmp_path.glob("s_*.png")) == ["s_1.png", "s_2.png"]
    for name in ("s_1.png", "s_2.png"):  # drawn in groups, each sample is the one seed + i gives
        kept = read_image(tmp_path / name, channels=1, height=28, width=28, levels=2).pixels
        assert (kept == read_image(whole / name, channels=1, height=28, width=28, levels=2).pixels).all()
    assert _hidden_files(tmp_path) == []


def test_ctrl_c_during_density_sampling_without_out_prints_the_finished_samples(capsys, monkeypatch):
    from engines.cli import main

    def ctrl_c():
        raise KeyboardInterrupt

    _density_groups_of_two(monkeypatch, ctrl_c)
    code = main(["generate", "image", "--model", "bmnist-nade", "--count", "5", "--seed", "7"])
    out, err = capsys.readouterr()
    assert code == 130
    assert err.strip().splitlines() == ["chainrule: interrupted after 2 of 5 samples: printed the finished samples"]
    assert "--- sample 1 (seed 7)" in out and "--- sample 2 (seed 8)" in out and "sample 3" not in out
    assert "##" in out


def test_ctrl_c_before_any_density_sample_is_finished_says_nothing_was_kept(capsys, tmp_path, monkeypatch):
    import engines.density.request as commands  # the request runner draws the samples
    from engines.cli import main

    real = commands.sample_events

    def interrupted_at_pixel_3(*args, **kwargs):
        for event in real(*args, **kwargs):
            if getattr(event, "position", 0) == 3:
                raise KeyboardInterrupt
            yield event

    monkeypatch.setattr(commands, "sample_events", interrupted_at_pixel_3)
    code = main(["generate", "image", "--model", "bmnist-nade", "--count", "4", "--seed", "1",
                 "--out", str(tmp_path / "s.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and err == ["chainrule: interrupted after 0 of 4 samples: nothing was kept (stopped at "
                                   "pixel 3 of 784 of the 4 samples drawn together)"], err
    assert list(tmp_path.iterdir()) == []


def _beam_stopped_at_step(monkeypatch, n: int, stop):
    """Beam search whose scorer runs `stop()` at its n-th step (0: at the prompt, before any step)."""
    import engines.text.session as session

    class Stopping(session.KVBeamScorer):
        steps = 0

        def start(self, prompt):
            if n == 0:
                stop()
            return super().start(prompt)

        def step(self, parents, tokens):
            Stopping.steps += 1
            if Stopping.steps == n:
                stop()
            return super().step(parents, tokens)

    monkeypatch.setattr(session, "KVBeamScorer", Stopping)


BEAM = ["generate", "text", "--model", "tiny-gpt2-optimum", "--models-dir", FIXTURES, "--prompt", "ROMEO:",
        "--strategy", "beam", "--num-beams", "3", "--num-return-sequences", "2", "--max-new-tokens", "20"]


def test_ctrl_c_during_beam_search_prints_the_best_hypotheses_so_far(capsys, monkeypatch):
    """Fails on the old command: an interrupted beam search printed nothing and said only "interrupted"."""
    from engines.cli import main

    def ctrl_c():
        raise KeyboardInterrupt

    _beam_stopped_at_step(monkeypatch, 4, ctrl_c)
    code = main(BEAM)
    out, err = capsys.readouterr()
    assert code == 130
    assert err.strip().splitlines() == ["chainrule: interrupted after 4 of at most 20 beam search steps: printed "
                                        "the 2 best hypotheses so far (cut short)"], err
    assert out.strip()


@posix_only
def test_sigterm_during_beam_search_writes_the_best_hypotheses_so_far(capsys, tmp_path, monkeypatch):
    from engines.cli import main

    _beam_stopped_at_step(monkeypatch, 5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    code = main([*BEAM, "--out", str(tmp_path / "b.json")])
    out, err = capsys.readouterr()
    kept = [tmp_path / "b_1.json", tmp_path / "b_2.json"]
    assert code == 143 and out == ""
    assert err.strip().splitlines() == [f"chainrule: terminated after 5 of at most 20 beam search steps: wrote the 2 "
                                        f"best hypotheses so far (cut short) to {kept[0]}, {kept[1]}"], err
    samples = [json.loads(p.read_text(encoding="utf-8"))["sample"] for p in kept]
    assert all(s["n"] == 5 and s["stopped_by"] == "interrupted" for s in samples), samples
    assert samples[0]["beam_score"] >= samples[1]["beam_score"]
    assert _hidden_files(tmp_path) == []


def test_ctrl_c_before_the_first_beam_step_says_nothing_was_kept(capsys, tmp_path, monkeypatch):
    from engines.cli import main

    def ctrl_c():
        raise KeyboardInterrupt

    _beam_stopped_at_step(monkeypatch, 0, ctrl_c)
    code = main([*BEAM, "--out", str(tmp_path / "b.txt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and err == ["chainrule: interrupted after 0 of at most 20 beam search steps: nothing was "
                                   "kept (the search had not taken its first step)"], err
    assert list(tmp_path.iterdir()) == []
