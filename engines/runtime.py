"""The one place that opens ONNX models with ONNX Runtime.

- Provider order: CUDA, then CPU. Which provider runs is read back from the created
  session (`session.get_providers()`), never from `get_available_providers()`, which
  lists CUDA on machines without a GPU. When CUDA is not used, `cuda_unavailable_reason`
  says why in words a user can act on.
- ONNX Runtime's own logging is turned down: asking for CUDA where its libraries are
  missing prints a long error before falling back to the CPU.
- A failed run (inputs the graph cannot take) is one `ModelRunError` naming the file, and
  ORT logs nothing about it on stderr (`GuardedSession`).
- Any failure to open a model (missing, empty, truncated, not ONNX, inputs/outputs that
  differ from what the model card promises) raises one `ModelLoadError` naming the file.
- `StatefulRunner` keeps per-step state (KV caches, WaveNet queues) as `OrtValue`s bound
  with IOBinding, so on CUDA the state never leaves the device between steps. The same
  code path runs on the CPU, where the tests exercise it.

Set `CHAINRULE_PROVIDER=cpu` to force the CPU even where CUDA works.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from engines.errors import ChainruleError, ModelLoadError, file_fault

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# ONNX magic: a ModelProto starts with field 1 (ir_version, varint) => byte 0x08.
_ONNX_FIRST_BYTE = 0x08

# Fatal only: a failed CUDA load is logged as an *error* (a red multi-line message) before
# ORT falls back to the CPU. We capture that text ourselves to explain the fallback.
ort.set_default_logger_severity(4)


def _want_cuda() -> bool:
    return os.environ.get("CHAINRULE_PROVIDER", "").lower() not in ("cpu", "cpuexecutionprovider")


def _requested_providers() -> list[str]:
    available = ort.get_available_providers()
    wanted = [CUDA, CPU] if (_want_cuda() and CUDA in available) else [CPU]
    return wanted


def _cuda_reason(used: Sequence[str], load_log: str = "") -> str | None:
    """Why CUDA is not the provider in use (None when it is)."""
    if CUDA in used:
        return None
    if not _want_cuda():
        return "CPU forced by CHAINRULE_PROVIDER=cpu"
    if CUDA not in ort.get_available_providers():
        return f"this onnxruntime build ({ort.__version__}) has no CUDA support; install onnxruntime-gpu"
    detail = ""
    match = re.search(r"with error: ([^\n\x1b]+)", load_log)
    if match:
        detail = f" ({match.group(1).strip()})"
    return (
        "CUDA could not start: no NVIDIA GPU was found or the CUDA/cuDNN libraries "
        f"onnxruntime-gpu needs are not installed{detail}"
    )


@contextlib.contextmanager
def _captured_stderr_fd():
    """Capture what native code writes to fd 2 (ORT's CUDA-load error) into a string."""
    buf: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr (e.g. a GUI launched without a console)
        yield buf
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            os.dup2(tmp.fileno(), 2)
            yield buf
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            buf.append(tmp.read().decode("utf-8", "replace"))


class ModelRunError(ChainruleError):
    """ONNX Runtime refused or failed a run (inputs the graph cannot take, memory): one line naming the file."""


# Every exception type ONNX Runtime's bindings raise (Fail, InvalidArgument, RuntimeException, ...).
_ORT_ERRORS = tuple(t for t in vars(ort.capi.onnxruntime_pybind11_state).values()
                    if isinstance(t, type) and issubclass(t, Exception))


def _quiet_run_options() -> ort.RunOptions:
    """Runs log nothing: a failed kernel would print a red multi-line ORT log on stderr before its
    exception, which `GuardedSession` turns into the one line the user sees."""
    ro = ort.RunOptions()
    ro.log_severity_level = 4  # fatal only
    return ro


_QUIET_RUN = _quiet_run_options()  # one, reused: runs only read it (steps run thousands of times a second)


def _run_error(path: Path, exc: BaseException) -> ModelRunError:
    text = str(exc).strip()
    detail = text.splitlines()[0] if text else type(exc).__name__
    detail = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", detail)  # ORT's code prefix
    return ModelRunError(f"{path}: ONNX Runtime could not run the model on this input: {detail}")


class GuardedSession:
    """An `ort.InferenceSession` whose `run` and `run_with_iobinding` log nothing and raise one
    `ModelRunError` naming the model file instead of ORT's own exception types (which the CLI would
    otherwise report as an internal error). Everything else is the session's own attribute."""

    def __init__(self, session: ort.InferenceSession, path: Path):
        self._session = session
        self._path = path

    def __getattr__(self, name: str):
        return getattr(self._session, name)

    def run(self, output_names, input_feed, run_options=None):
        try:
            return self._session.run(output_names, input_feed, run_options or _QUIET_RUN)
        except _ORT_ERRORS as exc:
            raise _run_error(self._path, exc) from exc

    def run_with_iobinding(self, binding, run_options=None):
        try:
            return self._session.run_with_iobinding(binding, run_options or _QUIET_RUN)
        except _ORT_ERRORS as exc:
            raise _run_error(self._path, exc) from exc


def session_options(intra_op_threads: int | None = None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # One thread is fastest for the one-token / one-sample steps these small models take
    # (measured in ENVIRONMENT.md); full-sequence scoring asks for more.
    if intra_op_threads is not None:
        opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    return opts


@dataclass
class ModelSession:
    """An open ONNX Runtime session plus what the user needs to know about it."""

    path: Path
    session: ort.InferenceSession
    provider: str  # the provider actually running the graph
    cuda_unavailable_reason: str | None
    input_names: tuple[str, ...] = field(init=False)
    output_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    @property
    def on_cuda(self) -> bool:
        return self.provider == CUDA

    @property
    def device(self) -> str:
        return "cuda" if self.on_cuda else "cpu"

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        return self.session.run(list(outputs) if outputs else None, dict(feeds))


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(f"{path}: model file not found")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a file")
    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError(f"{path}: the file is empty (0 bytes)")
    with open(path, "rb") as f:
        first = f.read(1)
    if first[0] != _ONNX_FIRST_BYTE:  # its bytes are not shown: a message never quotes a file
        raise ModelLoadError(f"{path}: not an ONNX model (it does not start as a protobuf ModelProto does)")


def _check_io(path: Path, actual: Iterable[str], expected: Iterable[str] | None, what: str) -> None:
    if expected is None:
        return
    actual_set, expected_set = set(actual), set(expected)
    missing = sorted(expected_set - actual_set)
    extra = sorted(actual_set - expected_set)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {what} {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {what} {', '.join(extra)}")
        raise ModelLoadError(f"{path}: does not match its model card: {'; '.join(parts)}")


def open_session(
    path: str | os.PathLike,
    *,
    expect_inputs: Iterable[str] | None = None,
    expect_outputs: Iterable[str] | None = None,
    intra_op_threads: int | None = 1,
) -> ModelSession:
    """Open `path` on the best provider; raise ModelLoadError naming the file on any problem."""
    path = Path(path)
    _check_file(path)
    providers = _requested_providers()
    log: list[str] = []
    opts = session_options(intra_op_threads)
    try:
        if CUDA in providers:
            with _captured_stderr_fd() as log:
                ort.set_default_logger_severity(3)  # let the load error through, into `log`
                try:
                    sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
                finally:
                    ort.set_default_logger_severity(4)
        else:
            sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # ORT raises several types (Fail, InvalidProtobuf, ...)
        raise ModelLoadError(f"{path}: cannot be loaded as an ONNX model (truncated or corrupt?): "
                             f"{file_fault(exc)}") from exc
    used = sess.get_providers()
    ms = ModelSession(path=path, session=GuardedSession(sess, path), provider=used[0], cuda_unavailable_reason=_cuda_reason(used, "".join(log)))
    _check_io(path, ms.input_names, expect_inputs, "input(s)")
    _check_io(path, ms.output_names, expect_outputs, "output(s)")
    return ms


@functools.lru_cache(maxsize=1)
def runtime_info() -> dict:
    """What this machine runs models on, read back from a real (tiny) session.

    The probe model is a one-node Identity graph shipped with the package
    (made by `python -m engines.make_probe`).
    """
    probe = resources.files("engines") / "probe.onnx"
    with resources.as_file(probe) as p:
        ms = open_session(p)
    return {
        "onnxruntime": ort.__version__,
        "providers_available": list(ort.get_available_providers()),
        "provider": ms.provider,
        "cuda_unavailable_reason": ms.cuda_unavailable_reason,
    }


class StatefulRunner:
    """Runs a step graph whose state outputs feed the next step's state inputs.

    `state` maps each state input name to the output that updates it, e.g.
    {"past_key_values.0.key": "present.0.key", ...}. Only the outputs named in `fetch`
    come back as numpy arrays.

    Two transports, one API:
    - "binding" (default under CUDA): the state is held as OrtValues on the session's device
      and re-bound every step with IOBinding, so KV caches and queues never visit the host.
    - "numpy" (default on the CPU, where the host *is* the device): plain `session.run` with
      the state as numpy arrays. `chainrule bench text` measures both side by side: on this
      project's 2-core machines IOBinding costs ~30% more per step for these small graphs.
    Tests run both transports on the CPU and require identical results.
    """

    TRANSPORTS = ("binding", "numpy")

    def __init__(self, model: ModelSession, state: Mapping[str, str], fetch: Sequence[str], transport: str | None = None):
        self.model = model
        self.state_map = dict(state)
        self.fetch = list(fetch)
        unknown_in = [n for n in self.state_map if n not in model.input_names]
        unknown_out = [n for n in [*self.state_map.values(), *self.fetch] if n not in model.output_names]
        if unknown_in or unknown_out:
            raise ModelLoadError(
                f"{model.path}: step graph lacks state/fetch names: {', '.join(unknown_in + unknown_out)}"
            )
        self.transport = transport or ("binding" if model.on_cuda else "numpy")
        if self.transport not in self.TRANSPORTS:
            raise ValueError(f"transport {self.transport!r} is not one of {self.TRANSPORTS}")
        self._device = model.device
        self._state: dict = {}
        self._outputs = self.fetch + list(self.state_map.values())

    def set_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Replace the state with host arrays (copied once to the device)."""
        if self.transport == "numpy":
            self._state = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
        else:
            self._state = {
                name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), self._device, 0)
                for name, a in arrays.items()
            }

    def state_numpy(self) -> dict[str, np.ndarray]:
        """Copy the state to the host (for tests, reordering and inspection)."""
        if self.transport == "numpy":
            return dict(self._state)
        return {name: v.numpy() for name, v in self._state.items()}

    def reorder(self, rows: np.ndarray, batch_axis: int = 0) -> None:
        """Keep state rows `rows` (beam search: beam b continues old beam rows[b])."""
        self.set_state({n: np.take(a, rows, axis=batch_axis) for n, a in self.state_numpy().items()})

    def step(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if self._state.keys() != self.state_map.keys():  # (keys views compare as sets, without building them)
            raise RuntimeError("StatefulRunner.step called before set_state")
        n = len(self.fetch)
        if self.transport == "numpy":
            outs = self.model.session.run(self._outputs, {**feeds, **self._state})
            self._state = {inp: outs[n + i] for i, inp in enumerate(self.state_map)}
            return outs[:n]
        binding = self.model.session.io_binding()
        for name, arr in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(arr))
        for name, value in self._state.items():
            binding.bind_ortvalue_input(name, value)
        for name in self.fetch:
            binding.bind_output(name, "cpu")
        for name in self.state_map.values():
            binding.bind_output(name, self._device)
        self.model.session.run_with_iobinding(binding)
        outs = binding.get_outputs()  # in binding order: fetch first, then state
        self._state = {inp: outs[n + i] for i, inp in enumerate(self.state_map)}
        return [outs[i].numpy() for i in range(n)]
