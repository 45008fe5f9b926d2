"""The ONNX Runtime wrapper against real tiny models the tests build."""

import numpy as np
import onnxruntime as ort
import pytest

from engines.errors import ModelLoadError
from engines.runtime import CPU, CUDA, StatefulRunner, open_session, runtime_info
from tests.onnx_models import bigram_table, write_accumulator_model, write_bigram_model


@pytest.fixture()
def bigram(tmp_path):
    table = bigram_table()
    return write_bigram_model(tmp_path / "bigram.onnx", table), table


def test_provider_is_read_back_from_the_session(bigram):
    ms = open_session(bigram[0])
    assert ms.provider == ms.session.get_providers()[0]
    if ms.provider == CPU:
        # available providers claim CUDA on this build, but the session tells the truth
        assert ms.cuda_unavailable_reason
    else:
        assert ms.provider == CUDA and ms.cuda_unavailable_reason is None


def test_forced_cpu_says_why(bigram, monkeypatch):
    monkeypatch.setenv("CHAINRULE_PROVIDER", "cpu")
    ms = open_session(bigram[0])
    assert ms.provider == CPU
    assert "CHAINRULE_PROVIDER" in ms.cuda_unavailable_reason


def test_runtime_info_matches_a_real_session():
    info = runtime_info()
    assert info["provider"] in (CPU, CUDA)
    assert info["providers_available"] == ort.get_available_providers()


def test_session_runs_the_model(bigram):
    path, table = bigram
    ms = open_session(path)
    (logits,) = ms.run({"input_ids": np.array([[1, 4]], dtype=np.int64)})
    np.testing.assert_allclose(logits[0], table[[1, 4]])


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "not found"),
        (b"", "empty"),
        (b"this is plainly not a model", "not an ONNX model"),
    ],
)
def test_bad_files_raise_one_clear_error(tmp_path, content, words):
    path = tmp_path / "broken.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError) as err:
        open_session(path)
    assert str(path) in str(err.value) and words in str(err.value)


def test_truncated_model_names_the_file(bigram, tmp_path):
    data = bigram[0].read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError) as err:
        open_session(cut)
    assert str(cut) in str(err.value)


def test_io_mismatch_with_card_names_the_difference(bigram):
    with pytest.raises(ModelLoadError) as err:
        open_session(bigram[0], expect_inputs=["input_ids", "attention_mask"], expect_outputs=["logits"])
    assert "missing input(s) attention_mask" in str(err.value)
    with pytest.raises(ModelLoadError) as err:
        open_session(bigram[0], expect_inputs=["input_ids"], expect_outputs=["scores"])
    assert "unexpected output(s) logits" in str(err.value) and "missing output(s) scores" in str(err.value)


@pytest.mark.parametrize("transport", ["binding", "numpy"])
def test_stateful_runner_keeps_state_between_steps(tmp_path, transport):
    ms = open_session(write_accumulator_model(tmp_path / "acc.onnx"))
    runner = StatefulRunner(ms, {"state": "state_out"}, fetch=["y"], transport=transport)
    runner.set_state({"state": np.zeros((2, 3), np.float32)})
    rng = np.random.default_rng(1)
    expected = np.zeros((2, 3), np.float32)
    for _ in range(5):
        x = rng.normal(size=(2, 3)).astype(np.float32)
        expected = expected + x
        (y,) = runner.step({"x": x})
        np.testing.assert_allclose(y, expected.sum(axis=1), rtol=1e-6)
    if transport == "binding":  # the state lives as OrtValues on the session's device
        assert all(isinstance(v, ort.OrtValue) for v in runner._state.values())
        assert all(v.device_name().lower() == ms.device for v in runner._state.values())
    np.testing.assert_allclose(runner.state_numpy()["state"], expected, rtol=1e-6)


@pytest.mark.parametrize("transport", ["binding", "numpy"])
def test_stateful_runner_reorders_rows_for_beams(tmp_path, transport):
    ms = open_session(write_accumulator_model(tmp_path / "acc.onnx"))
    runner = StatefulRunner(ms, {"state": "state_out"}, fetch=["y"], transport=transport)
    start = np.arange(6, dtype=np.float32).reshape(2, 3)
    runner.set_state({"state": start})
    runner.reorder(np.array([1, 1]))
    (y,) = runner.step({"x": np.zeros((2, 3), np.float32)})
    np.testing.assert_allclose(y, [12.0, 12.0])


def test_stateful_runner_refuses_unknown_names(tmp_path):
    ms = open_session(write_accumulator_model(tmp_path / "acc.onnx"))
    with pytest.raises(ModelLoadError, match="present.0.key"):
        StatefulRunner(ms, {"state": "present.0.key"}, fetch=["y"])


def test_default_transport_follows_the_provider(tmp_path):
    ms = open_session(write_accumulator_model(tmp_path / "acc.onnx"))
    runner = StatefulRunner(ms, {"state": "state_out"}, fetch=["y"])
    assert runner.transport == ("binding" if ms.on_cuda else "numpy")
