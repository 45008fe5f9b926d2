"""The Decoding dock on the shipped models: each tab owns its settings (top-p for text never
reaches the Image tab), starts at its model card's defaults, resets to them, and warns before a
run when the settings would collapse the model's distributions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engines.cli import main as cli_main
from engines.decoding.config import DecodingConfig
from engines.decoding.flags import card_config
from tests.tab_helpers import RUN_TIMEOUT_MS, new_window, run_and_wait

pytestmark = pytest.mark.usefixtures("isolated_user_models")  # the shipped models only

PROBE_TIMEOUT_MS = 20_000  # loading a model and one forward pass, on a shared machine


@pytest.fixture
def window(qtbot):
    w = new_window(qtbot)
    w.show()
    qtbot.waitExposed(w)
    yield w
    for name in ("Text", "Image", "Density"):
        tab = w.tab(name)
        if tab is not None and hasattr(tab, "is_idle"):
            tab.stop()
            qtbot.waitUntil(tab.is_idle, timeout=RUN_TIMEOUT_MS)
    w.ctx.stop_all()  # the dock's probes too
    w.ctx.wait_idle(RUN_TIMEOUT_MS)
    w.close()


def card_defaults(window, tab_name: str) -> DecodingConfig:
    info = window.tab(tab_name).current_model_info()
    return card_config(info.card.get("decoding_defaults"))


def generate_image(qtbot, tab) -> np.ndarray:
    run = run_and_wait(qtbot, tab, tab.generate, timeout_ms=60_000)
    assert run.state == "done"
    return tab.canvas.pixels.copy()


# --- per-tab settings ------------------------------------------------------------------------------
def test_top_p_set_for_text_changes_nothing_in_the_image_tab(window, qtbot):
    """The issue's scenario: top-p 0.9 set on the Text tab; the Image tab's config, and the image it
    makes with a fixed seed, are unchanged."""
    assert window.select_tab("Image")
    image = window.tab("Image")
    assert image.select_model("mnist-pixelcnn")
    image.set_speed(math.inf)
    window.decoding_panel.set_config(window.ctx.decoding_config("image").replace(seed=7))
    image_config = window.ctx.decoding_config("image")
    assert image_config.seed == 7 and image_config.top_p == 1.0
    before = generate_image(qtbot, image)

    assert window.select_tab("Text")
    assert window.decoding_settings.key() == "text"
    assert window.decoding_panel.config() == window.ctx.decoding_config("text")
    window.decoding_panel.set_config(window.ctx.decoding_config("text").replace(top_p=0.9))
    assert window.ctx.decoding_config("text").top_p == 0.9
    assert window.ctx.decoding_config("image") == image_config  # untouched

    assert window.select_tab("Image")
    assert window.decoding_panel.config() == image_config  # the panel shows the Image tab's own
    assert window.ctx.decoding_config("image") == image_config
    assert "Image" in window.decoding_settings.owner_text()
    after = generate_image(qtbot, image)
    np.testing.assert_array_equal(after, before)
    assert window.ctx.decoding_config("text").top_p == 0.9  # and the text setting is still there


def test_the_text_tab_starts_at_its_card_defaults_as_the_cli_does(window, qtbot, capsys):
    assert window.select_tab("Text")
    text = window.tab("Text")
    assert text.select_model("shakespeare-char")
    config = window.ctx.decoding_config("text")
    assert (config.temperature, config.top_p) == (0.8, 0.95)  # the card's, not 1.0 and no filter
    assert config == card_defaults(window, "Text").replace(seed=config.seed)
    assert window.decoding_panel.config() == config
    owner = window.decoding_settings.owner_text()
    assert "Text" in owner and "shakespeare-char (card defaults)" in owner
    assert not window.decoding_settings.reset_button.isEnabled()
    # `chainrule generate text` with no decoding flags samples with the same settings
    assert cli_main(["generate", "text", "--model", "shakespeare-char", "--max-new-tokens", "2",
                     "--seed", "1", "--json"]) == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert (settings["temperature"], settings["top_p"], settings["top_k"]) == (0.8, 0.95, 0)


def test_each_tab_starts_at_its_own_models_defaults(window):
    for name, key in (("Image", "image"), ("Density", "density")):
        assert window.select_tab(name)
        config = window.ctx.decoding_config(key)
        assert config == card_defaults(window, name).replace(seed=config.seed)
        assert window.decoding_panel.config() == config
        model = window.tab(name).current_model_info().id
        assert window.decoding_settings.owner_text() == (f"Settings of the <b>{name}</b> tab · {model} "
                                                         "(card defaults)")


def test_reset_to_model_defaults_keeps_the_seed(window, qtbot):
    assert window.select_tab("Text")
    assert window.tab("Text").select_model("shakespeare-char")
    dock = window.decoding_settings
    window.decoding_panel.set_config(window.ctx.decoding_config("text").replace(top_k=5, temperature=1.3, seed=42))
    assert "(edited)" in dock.owner_text() and dock.reset_button.isEnabled()
    dock.reset_button.click()
    config = window.ctx.decoding_config("text")
    assert config == card_defaults(window, "Text").replace(seed=42)
    assert window.decoding_panel.config() == config
    assert "(card defaults)" in dock.owner_text() and not dock.reset_button.isEnabled()
    # only the seed differing is still the defaults
    window.decoding_panel.set_config(config.replace(seed=3))
    assert not dock.reset_button.isEnabled()


def test_choosing_another_model_starts_from_its_defaults(window):
    assert window.select_tab("Text")
    text = window.tab("Text")
    assert text.select_model("shakespeare-char")
    window.decoding_panel.set_config(window.ctx.decoding_config("text").replace(top_k=3))
    assert text.select_model("gutenberg-bpe")
    config = window.ctx.decoding_config("text")
    assert config == card_defaults(window, "Text").replace(seed=config.seed)
    assert "gutenberg-bpe (card defaults)" in window.decoding_settings.owner_text()


# --- the collapse warning ---------------------------------------------------------------------------
def test_top_p_0_9_is_flagged_for_mnist_pixelcnn_before_any_run(window, qtbot):
    dock = window.decoding_settings
    assert window.select_tab("Image")
    assert window.tab("Image").select_model("mnist-pixelcnn")
    qtbot.waitUntil(dock.probe_ready, timeout=PROBE_TIMEOUT_MS)
    assert dock.warning_text() == ""  # its card defaults collapse nothing
    window.decoding_panel.set_config(window.ctx.decoding_config("image").replace(top_p=0.9))
    warning = dock.warning_text()
    assert warning.startswith("top-p 0.9 leaves one value at ")
    assert "of pixel positions for mnist-pixelcnn: samples will be near-deterministic (all-black digits)" in warning
    assert dock.last_check_ms < 200  # measured ~12 ms idle, ~50 ms on a busy shared machine
    # the same setting on the Text tab (shakespeare-char) is no collapse
    assert window.select_tab("Text")
    assert window.tab("Text").select_model("shakespeare-char")
    window.decoding_panel.set_config(window.ctx.decoding_config("text").replace(top_p=0.9))
    qtbot.waitUntil(dock.probe_ready, timeout=PROBE_TIMEOUT_MS)
    assert dock.warning_text() == ""
    assert window.select_tab("Image")  # back: the Image tab's own top-p 0.9 is flagged again
    assert dock.warning_text() == warning
    window.decoding_settings.reset_button.click()
    assert dock.warning_text() == ""
    assert dock.probes_started == 2  # once per model (the two shown): back and forth reuses them


# --- what each tab's model can use ------------------------------------------------------------------
def test_the_panel_greys_out_what_the_shown_tab_s_model_cannot_use(window):
    from engines.decoding.support import supported_samplers

    panel = window.decoding_panel
    assert window.select_tab("Image")
    assert window.tab("Image").select_model("mnist-pixelcnn")
    unsupported = panel.unsupported()
    assert "repetition_penalty" in unsupported and "top_p" not in unsupported
    info = window.tab("Image").current_model_info()
    assert unsupported == {k: v for k, v in supported_samplers("image", info.card).items() if v}
    assert window.select_tab("Density")  # two-valued pixels: the truncation filters are greyed too
    assert {"top_p", "min_p", "repetition_penalty"} <= set(panel.unsupported())
    assert window.select_tab("Text")
    assert panel.unsupported() == {}
