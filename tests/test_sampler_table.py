"""The table of samplers (engines.decoding.sampler_table) and what is derived from it: the config's
fields and validation, the chain names, the CLI flags, the panel rows, what each modality supports
(engines.decoding.support, the panel's greyed rows) and the one draw every modality shares."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from engines.cli import build_parser, config_from_args
from engines.decoding import build_chain
from engines.decoding.config import DEFAULT_CHAIN, FILTER_NAMES, DecodingConfig
from engines.decoding.flags import FLAG_OF, decoding_arguments
from engines.decoding.sampler_table import AUDIO, BINARY, LEVELS, SAMPLERS, SETTINGS, SPECS, TOKENS
from engines.decoding.samplers import LogitsFilter, TokenSelector, inverse_cdf
from engines.decoding.support import check_supported, distribution_of, supported_samplers
from engines.errors import DecodingError
from engines.generation import draw_step, temperature_chain, two_value_rows

NADE_CARD = {"architecture": {"family": "nade"}}
PIXELCNN_CARD = {"architecture": {"family": "gated-pixelcnn", "levels": 256}}


def test_every_entry_is_complete():
    for spec in SAMPLERS:
        assert spec.role in ("penalty", "filter", "selector") and spec.label and spec.help
        assert set(spec.unsuited) <= {TOKENS, LEVELS, BINARY, AUDIO}
        assert TOKENS not in spec.unsuited, "text can use every sampler"
        made = spec.factory(DecodingConfig(), 0)
        assert made is None or isinstance(made, TokenSelector if spec.role == "selector" else LogitsFilter)
    assert [s.role for s in SAMPLERS if s.role == "selector"] and SAMPLERS[-1].name == "categorical"


def test_config_fields_and_defaults_are_the_tables():
    fields = {f.name: f.default for f in dataclasses.fields(DecodingConfig)}
    for setting in SETTINGS:
        assert fields[setting.field] == setting.default, setting.field
    sampler_fields = [f for f in fields if f not in ("strategy", "chain", "num_beams", "length_penalty",
                                                     "early_stopping", "num_return_sequences", "seed")]
    assert sorted(sampler_fields) == sorted(s.field for s in SETTINGS), "a config field the table does not describe"


def test_chain_names_keep_llama_cpp_order():
    assert FILTER_NAMES == DEFAULT_CHAIN == ("repetition_penalty", "no_repeat_ngram", "top_k", "typical_p",
                                             "top_p", "min_p", "temperature")


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.field)
def test_validation_follows_each_range(setting):
    if setting.off is not None:
        DecodingConfig(**{setting.field: setting.off})
    DecodingConfig(**{setting.field: setting.on_value})
    outside = []
    if setting.lo is not None:
        outside.append(setting.lo if setting.lo_open and setting.lo != setting.off else setting.lo - 1)
    if setting.hi is not None:
        outside.append(setting.hi if setting.hi_open else setting.hi + 1)
    outside.append(float("nan") if setting.type is float else 2.5)
    for value in outside:
        if value == setting.off:
            continue
        with pytest.raises(DecodingError, match=f"{setting.field.replace('_', '-')} = .* is invalid"):
            DecodingConfig(**{setting.field: value})


def test_existing_messages_are_kept():
    for kwargs, words in [({"top_p": 0.0}, "top-p = 0.0 is invalid: must be in (0, 1]; 1 turns it off (0 would keep nothing)"),
                          ({"temperature": -1.0}, "temperature = -1.0 is invalid: must be a number >= 0 (0 means greedy)"),
                          ({"temperature": 1000.0}, "temperature = 1000.0 is invalid: must be 0 (greedy) or in 0.01..100"),
                          ({"repetition_penalty": 500.0}, "must be in 0.01..100; 1 turns it off"),
                          ({"top_k": -1}, "top-k = -1 is invalid: must be a whole number >= 1, or 0 to turn it off")]:
        with pytest.raises(DecodingError) as exc:
            DecodingConfig(**kwargs)
        assert words in str(exc.value)


def test_cli_flags_come_from_the_table_and_round_trip():
    for setting in SETTINGS:
        assert FLAG_OF[setting.field] == setting.flag
    config = DecodingConfig(**{s.field: s.on_value for s in SETTINGS}, seed=4).replace(temperature=0.7,
                                                                                        mirostat_eta=0.3)
    argv = decoding_arguments(config, None)
    for setting in SETTINGS:
        assert setting.flag in argv, setting.flag
    args = build_parser().parse_args(["generate", "text", "--model", "m", *argv, "--seed", "4"])
    assert config_from_args(args) == config


def test_build_chain_uses_the_factories_in_chain_order():
    config = DecodingConfig(top_k=5, temperature=0.5, min_p=0.1, chain=("temperature", "min_p", "top_k"))
    assert build_chain(config, 2).name == "temp 0.5 → min-p 0.1 → top-k 5 → dist seed 2"
    assert build_chain(DecodingConfig(strategy="greedy", top_k=5, repetition_penalty=1.2), 2).name == \
        "rep-penalty 1.2 → greedy"


# --- what each modality supports ---------------------------------------------------------------------

def test_distributions_of_each_tab_and_card():
    assert distribution_of("text") == TOKENS
    assert distribution_of("image", PIXELCNN_CARD) == LEVELS
    assert distribution_of("image", NADE_CARD) == BINARY  # `generate image` also serves NADE / MADE
    assert distribution_of("density") == BINARY and distribution_of("audio") == AUDIO
    with pytest.raises(ValueError, match="video"):
        distribution_of("video")


def test_supported_samplers_per_modality():
    assert all(why is None for why in supported_samplers("text").values())
    image = supported_samplers("image", PIXELCNN_CARD)
    assert {n for n, why in image.items() if why} == {"repetition_penalty", "no_repeat_ngram", "mirostat"}
    assert "history" in image["repetition_penalty"]
    usable = {"temperature", "greedy", "categorical"}
    for kind, card in [("density", None), ("image", NADE_CARD), ("audio", None)]:
        got = supported_samplers(kind, card)
        assert {n for n, why in got.items() if why is None} == usable, kind
        assert set(got) == set(SPECS)
    assert "two values" in supported_samplers("density")["top_p"]


def test_engines_refuse_what_the_modality_cannot_use():
    with pytest.raises(DecodingError) as exc:
        check_supported(DecodingConfig(repetition_penalty=1.2), "image", PIXELCNN_CARD)
    assert str(exc.value).startswith("repetition penalty 1.2 cannot be used for PixelCNN pixels: ")
    assert str(exc.value).endswith("turn it off (repetition penalty 1)")
    with pytest.raises(DecodingError, match="top-p 0.5 cannot be used for black-or-white pixels"):
        check_supported(DecodingConfig(top_p=0.5), "density")
    with pytest.raises(DecodingError, match=r"beam search \(strategy beam\) is not available for audio models"):
        check_supported(DecodingConfig(strategy="beam"), "audio")
    with pytest.raises(DecodingError, match="Mirostat tau 5"):
        check_supported(DecodingConfig(mirostat_tau=5.0), "image")
    check_supported(DecodingConfig(top_p=0.5, temperature=0.7), "image", PIXELCNN_CARD)  # kept, with its warning
    check_supported(DecodingConfig(strategy="greedy", top_p=0.5), "density")  # greedy never reads top-p
    check_supported(DecodingConfig(strategy="beam", repetition_penalty=1.3, mirostat_tau=3.0), "text")


def test_pixel_and_density_engines_use_the_declaration():
    from engines.density.sampling import check_config as density_config
    from engines.image.sampler import check_config as image_config

    with pytest.raises(DecodingError, match="no-repeat n-gram 3 cannot be used for PixelCNN pixels"):
        image_config(DecodingConfig(no_repeat_ngram=3))
    with pytest.raises(DecodingError, match="min-p 0.1 cannot be used for black-or-white pixels"):
        density_config(DecodingConfig(min_p=0.1))
    assert density_config(DecodingConfig(temperature=0.7)) == 0.7
    assert density_config(DecodingConfig(strategy="greedy")) == 0.0


def test_panel_rows_follow_the_table_and_grey_out_what_the_model_cannot_use(qtbot):
    from studio.decoding_panel import DecodingPanel

    panel = DecodingPanel()
    qtbot.addWidget(panel)
    assert list(panel._rows) == [s.field for s in SETTINGS]
    panel.set_config(DecodingConfig(top_p=0.9, repetition_penalty=1.2))
    panel.set_supported(supported_samplers("image", PIXELCNN_CARD))
    rep, ngram, top_p = (panel._rows[n] for n in ("repetition_penalty", "no_repeat_ngram", "top_p"))
    assert not rep.spin.isEnabled() and "history" in rep.check.toolTip()
    assert rep.check.isEnabled(), "a ticked sampler the model cannot use can still be unticked"
    assert not ngram.check.isEnabled() and "history" in ngram.check.toolTip()
    assert top_p.spin.isEnabled() and top_p.check.isEnabled()
    assert panel.config().repetition_penalty == 1.2, "values stay as they are"
    items = {panel.chain_list.item(i).data(256): panel.chain_list.item(i) for i in range(panel.chain_list.count())}
    assert "not for this model" in items["repetition_penalty"].text() and items["repetition_penalty"].toolTip()
    rep.check.setChecked(False)
    assert panel.config().repetition_penalty == 1.0 and not rep.check.isEnabled()
    panel.set_supported(supported_samplers("text"))
    assert rep.check.isEnabled() and ngram.check.isEnabled() and not panel.unsupported()
    assert "Untick" in rep.check.toolTip()


# --- one draw for every modality ---------------------------------------------------------------------

def test_inverse_cdf_never_draws_a_removed_value_and_refuses_empty_rows():
    logits = np.array([[0.0, -np.inf, 1.0], [np.log(0.5), np.log(0.25), np.log(0.25)]])
    assert inverse_cdf(logits, np.array([0.999999, 0.6])).tolist() == [2, 1]
    assert inverse_cdf(logits, np.array([0.0, 0.0])).tolist() == [0, 0]
    with pytest.raises(DecodingError, match="filtered out"):
        inverse_cdf(np.full((1, 3), -np.inf), np.array([0.5]))
    with pytest.raises(DecodingError, match="NaN"):
        inverse_cdf(np.array([[0.0, np.nan]]), np.array([0.5]))


def test_a_bernoulli_logit_is_a_two_value_row():
    z = np.array([-2.0, 0.0, 3.0])
    chain = temperature_chain(0.5)
    p1 = 1 / (1 + np.exp(-z / 0.5))
    for u in (0.01, 0.3, 0.5, 0.7, 0.99):
        values, _ = draw_step(chain, two_value_rows(z), None, np.full(3, u))
        assert values.tolist() == (u >= 1 - p1).astype(int).tolist()  # 1 when u passes p(0)
    greedy, _ = draw_step(temperature_chain(0.0), two_value_rows(z), None, np.full(3, 0.99))
    assert greedy.tolist() == [0, 0, 1]  # z > 0 only; a tie keeps 0


def test_density_samples_are_the_shared_draw_of_the_models_logits():
    pytest.importorskip("torch")
    from engines.density.model import load_density_model
    from engines.density.sampling import sample
    from engines.registry import get_model
    from tests.density_models import export_nade_dir, make_nade

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as root:
        export_nade_dir(make_nade(dims=6, hidden=5, seed=2), Path(root), "t-nade",
                        meta={"command": "test", "iter": 0, "data": {"height": 2, "width": 3}})
        nade = load_density_model(get_model("t-nade", [root]))
        for temperature in (1.0, 0.6, 0.0):
            done = sample(nade, seed=9, count=3, temperature=temperature, method="naive")
            x = np.zeros((3, 6), np.float32)
            u = np.stack([np.random.default_rng(9 + i).random(6) for i in range(3)])
            for d in range(6):
                z = nade.logits(x)[:, d].astype(np.float64)
                if temperature == 0:
                    x[:, d] = z > 0
                else:
                    p0 = 1 / (1 + np.exp(z / temperature))
                    x[:, d] = u[:, d] >= p0
            assert np.array_equal(done.images, x.astype(np.uint8)), temperature
    assert math.isfinite(float(done.sampled_logprob.sum()))


def test_plain_sampling_is_every_filter_and_selector_off():
    from engines.decoding.support import changes_from_plain, plain

    config = DecodingConfig(temperature=0.8, top_p=0.9, mirostat_tau=5.0, repetition_penalty=1.2, seed=3)
    assert changes_from_plain(config) == ["temperature 0.8", "top-p 0.9", "Mirostat tau 5"]
    p = plain(config)
    assert changes_from_plain(p) == [] and p.seed == 3 and p.repetition_penalty == 1.2
    assert build_chain(p, 3).name == "rep-penalty 1.2 → dist seed 3"
    assert changes_from_plain(DecodingConfig(top_k=1, min_p=0.1)) == ["greedy decoding", "min-p 0.1"]
    assert changes_from_plain(DecodingConfig(strategy="greedy")) == ["greedy decoding"]


def test_the_two_value_draw_is_the_general_inverse_cdf():
    """inverse_cdf spells out 2-value rows (binary pixels): the same draw as the general cumulative rule."""
    from engines.decoding.samplers import inverse_cdf

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 4, (4000, 2)), [[0.0, -np.inf], [-np.inf, 0.0], [0.0, 0.0], [50.0, -50.0]]])
    u = np.concatenate([rng.random(4000), [0.999999, 0.0, 0.5, 0.999999]])
    e = np.exp(x - x.max(axis=1, keepdims=True))
    cdf = e.cumsum(axis=1)
    general = (cdf <= u[:, None] * cdf[:, -1:]).sum(axis=1)
    np.testing.assert_array_equal(inverse_cdf(x, u), general)
    assert inverse_cdf(x, u)[-4:].tolist() == [0, 1, 1, 0]
