"""Mirostat v2 (engines.decoding.mirostat): a hand-computed run with fixed uniforms, its place in
the chain and the generation loop, and its settings through the config, the CLI and the panel."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engines.cli import build_parser, config_from_args
from engines.decoding import build_chain
from engines.decoding.config import DecodingConfig
from engines.decoding.flags import decoding_arguments
from engines.decoding.mirostat import MirostatV2
from engines.errors import DecodingError
from engines.generation import collect, generate_steps

# probabilities 1/2, 1/4, 1/8, 1/8: surprises of exactly 1, 2, 3 and 3 bits
LOGITS = np.log(np.array([[0.5, 0.25, 0.125, 0.125]]))


def kept(selector: MirostatV2) -> list[int]:
    return [int(i) for i in np.flatnonzero(np.isfinite(selector.truncate(LOGITS)[0]))]


def test_a_hand_computed_run_keeps_draws_and_moves_mu():
    """tau 1.5, eta 0.5: mu starts at 3. Each step keeps the values of surprise <= mu, draws by inverse
    CDF over the renormalised kept set at the given uniform, then mu -= eta * (surprise - tau)."""
    m = MirostatV2(tau=1.5, eta=0.5, seed=0)
    steps = [
        # (uniform, kept set, drawn value, its surprise under the renormalised kept set, mu after)
        # mu 3: all four kept; cdf .5 .75 .875 1; u .6 -> value 1 (p 1/4, 2 bits); mu = 3 - .5 * .5
        (0.6, [0, 1, 2, 3], 1, 2.0, 2.75),
        # mu 2.75: values 0, 1 kept, renormalised 2/3, 1/3; u .7 -> value 1 (log2 3 bits)
        (0.7, [0, 1], 1, math.log2(3), 2.75 - 0.5 * (math.log2(3) - 1.5)),
        # mu 2.7075: still 0, 1; u .1 -> value 0 (log2 1.5 bits); mu rises past 3 again
        (0.1, [0, 1], 0, math.log2(1.5), 2.75 - 0.5 * (math.log2(3) - 1.5) - 0.5 * (math.log2(1.5) - 1.5)),
        # mu 3.165: all kept again; u .95 -> value 3 (3 bits); mu = 3.165 - .5 * 1.5
        (0.95, [0, 1, 2, 3], 3, 3.0,
         2.75 - 0.5 * (math.log2(3) - 1.5) - 0.5 * (math.log2(1.5) - 1.5) - 0.75),
    ]
    assert m.mu is None
    for u, keep, value, surprise, mu_after in steps:
        if m.mu is not None:
            assert kept(m) == keep
        drawn = m.draw(LOGITS, np.array([u]))
        assert kept(m) == keep  # the first draw set mu to 2 tau = 3
        assert drawn.tolist() == [value]
        m.accept(drawn)
        assert m.mu[0] == pytest.approx(mu_after, abs=1e-12)
    assert m.mu[0] == pytest.approx(2.41504, abs=1e-5)
    assert kept(m) == [0, 1]  # 2.415 bits: the 3-bit values drop out again


def test_a_threshold_below_every_surprise_keeps_the_most_likely_value():
    m = MirostatV2(tau=0.2, eta=0.1, seed=0)  # mu 0.4 bits < 1 bit: only value 0 (ties: lower id)
    assert m.draw(LOGITS, np.array([0.99])).tolist() == [0]
    flat = np.zeros((1, 3))  # three equally likely values: the lowest id stays
    m2 = MirostatV2(tau=0.2, eta=0.1, seed=0)
    assert np.isfinite(m2.truncate(flat)[0]).tolist() == [True, False, False]


def test_each_row_keeps_its_own_mu_and_a_padded_row_keeps_it():
    m = MirostatV2(tau=1.5, eta=0.5, seed=0)
    logits = np.repeat(LOGITS, 2, axis=0)
    drawn = m.draw(logits, np.array([0.6, 0.1]))  # row 0 -> value 1 (2 bits), row 1 -> value 0 (1 bit)
    assert drawn.tolist() == [1, 0]
    m.accept(drawn)
    assert m.mu.tolist() == pytest.approx([2.75, 3.25])
    m.draw(logits, np.array([0.5, 0.5]))  # mu 2.75 keeps values 0, 1 in row 0
    m.accept(np.array([3, 0]))  # row 0 padded with a value outside its kept set: its mu stays
    assert m.mu[0] == pytest.approx(2.75)


def test_select_draws_one_uniform_per_row_from_its_seed():
    a, b = MirostatV2(3.0, 0.1, seed=5), MirostatV2(3.0, 0.1, seed=5)
    u = np.random.Generator(np.random.PCG64(5)).random(1)
    assert a.select(LOGITS).tolist() == b.draw(LOGITS, u).tolist()


@pytest.mark.parametrize("tau, eta, setting", [(0, 0.1, "mirostat-tau"), (-1, 0.1, "mirostat-tau"),
                                               (3, 0, "mirostat-eta"), (3, 1.5, "mirostat-eta")])
def test_bad_settings_name_the_setting(tau, eta, setting):
    with pytest.raises(DecodingError, match=setting):
        MirostatV2(tau, eta, seed=0)


# --- the chain and the loop ----------------------------------------------------------------------

def test_config_turns_it_on_as_the_chain_selector():
    chain = build_chain(DecodingConfig(temperature=0.8, mirostat_tau=4.0, mirostat_eta=0.2), 7)
    assert isinstance(chain.selector, MirostatV2)
    assert chain.name == "temp 0.8 → mirostat-v2 tau 4 eta 0.2 seed 7"
    assert type(build_chain(DecodingConfig(), 7).selector).__name__ == "CategoricalSelector"  # tau 0: off
    assert build_chain(DecodingConfig(strategy="greedy", mirostat_tau=4.0), 7).selector.name == "greedy"
    for bad, words in [({"mirostat_tau": -1.0}, "mirostat-tau = -1.0 is invalid"),
                       ({"mirostat_tau": 31.0}, "mirostat-tau"), ({"mirostat_eta": 0.0}, "mirostat-eta = 0.0")]:
        with pytest.raises(DecodingError, match=words):
            DecodingConfig(**bad)


class _Fixed:
    """A step model whose next distribution is always LOGITS."""

    def prefill(self, contexts):
        return np.repeat(LOGITS, len(contexts), axis=0)

    def advance(self, values):
        return np.repeat(LOGITS, len(values), axis=0)


def test_the_step_loop_runs_it_and_repeats_with_the_seed():
    config = DecodingConfig(mirostat_tau=1.0, mirostat_eta=0.5)
    a = collect(generate_steps(_Fixed(), [[0], [1]], config, 30, seed=3, n_alternatives=0), 3)
    b = collect(generate_steps(_Fixed(), [[0], [1]], config, 30, seed=3, n_alternatives=0), 3)
    assert np.array_equal(a.values, b.values)
    # a target of 1 bit pulls mu down to where only the 1-bit value survives most of the time
    assert (a.values == 0).mean() > 0.6


# --- settings round trips ---------------------------------------------------------------------------

def test_config_cli_and_flags_round_trip():
    config = DecodingConfig(mirostat_tau=4.5, mirostat_eta=0.25, seed=1)
    assert DecodingConfig.from_dict(config.to_dict()) == config
    argv = decoding_arguments(config, {"temperature": 1.0})
    assert argv == ["--mirostat-tau", "4.5", "--mirostat-eta", "0.25"]
    args = build_parser().parse_args(["generate", "text", "--model", "m", *argv, "--seed", "1"])
    assert config_from_args(args, {"temperature": 1.0}) == config


def test_cli_refuses_it_with_greedy_as_unused():
    args = build_parser().parse_args(["generate", "text", "--model", "m", "--strategy", "greedy",
                                      "--mirostat-tau", "3"])
    with pytest.raises(DecodingError, match="--mirostat-tau does not apply to --strategy greedy"):
        config_from_args(args)


def test_panel_row_round_trip(qtbot):
    from studio.decoding_panel import DecodingPanel

    panel = DecodingPanel()
    qtbot.addWidget(panel)
    tau, eta = panel._rows["mirostat_tau"], panel._rows["mirostat_eta"]
    assert tau.check is not None and eta.check is None and eta.parent == "mirostat_tau"
    assert not eta.spin.isEnabled()  # off until its sampler is ticked
    config = DecodingConfig(mirostat_tau=6.0, mirostat_eta=0.3)
    panel.set_config(config)
    assert tau.check.isChecked() and eta.spin.isEnabled() and panel.config() == config
    assert "mirostat-v2 tau 6 eta 0.3" in panel.chain_label.text()
    with qtbot.waitSignal(panel.configChanged):
        tau.check.setChecked(False)
    assert panel.config().mirostat_tau == 0.0 and panel.config().mirostat_eta == 0.3
    with qtbot.waitSignal(panel.configChanged):
        tau.check.setChecked(True)  # the value the user had comes back
    assert panel.config().mirostat_tau == 6.0
