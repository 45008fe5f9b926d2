"""Each tab opens on the model that shows it best (Image: the digit-conditioned PixelCNN, Text: the
Shakespeare model) and remembers the user's last choice across sessions (the settings file of
$CHAINRULE_STUDIO_SETTINGS, a fresh one per test: tests/conftest.py)."""

from __future__ import annotations

import pytest

from studio.context import StudioContext, make_settings

pytestmark = pytest.mark.usefixtures("isolated_user_models")  # the shipped models only


def _image_tab(qtbot, ctx=None):
    from studio.tabs.image_tab import ImageTab

    tab = ImageTab(ctx or StudioContext())  # a new context: the settings file as a new session reads it
    qtbot.addWidget(tab)
    return tab


def _text_tab(qtbot, ctx=None):
    from studio.tabs.text_tab import TextTab

    tab = TextTab(ctx or StudioContext())
    qtbot.addWidget(tab)
    return tab


def test_a_fresh_image_tab_opens_on_the_digit_conditioned_model(qtbot):
    tab = _image_tab(qtbot)
    # bmnist-pixelcnn (unconditional) is listed first; the card's digit conditioning wins.
    assert tab.model_ids().index("bmnist-pixelcnn") < tab.model_ids().index("mnist-pixelcnn")
    assert tab.model_combo.currentData() == "mnist-pixelcnn"
    assert tab.label_combo.count() > 1  # the digits to pick are there


def test_a_fresh_text_tab_opens_on_the_shakespeare_model(qtbot):
    tab = _text_tab(qtbot)
    assert "gutenberg-bpe" in tab.model_ids()
    assert tab.model_combo.currentData() == "shakespeare-char"


@pytest.mark.parametrize("make_tab, kind, other", [(_image_tab, "image", "bmnist-pixelcnn"),
                                                   (_text_tab, "text", "gutenberg-bpe")])
def test_the_users_choice_is_kept_for_the_next_session(qtbot, make_tab, kind, other):
    first = make_tab(qtbot)
    assert first.select_model(other)
    assert make_settings().value(f"models/last_{kind}") == other
    again = make_tab(qtbot)  # the studio started again on the same settings
    assert again.model_combo.currentData() == other


@pytest.mark.parametrize("make_tab, kind, preferred", [(_image_tab, "image", "mnist-pixelcnn"),
                                                       (_text_tab, "text", "shakespeare-char")])
def test_a_remembered_model_that_is_gone_gives_the_preferred_one_quietly(qtbot, make_tab, kind, preferred):
    settings = make_settings()
    settings.setValue(f"models/last_{kind}", "uninstalled-model")
    settings.sync()
    errors = []
    ctx = StudioContext()
    ctx.errorMessage.connect(errors.append)
    tab = make_tab(qtbot, ctx)
    assert tab.model_combo.currentData() == preferred
    assert "uninstalled-model" not in tab.status.text()
    assert errors == []
    # Opening on the preferred model is not a choice: the remembered one comes back when reinstalled.
    assert make_settings().value(f"models/last_{kind}") == "uninstalled-model"


def test_the_window_reopens_each_tab_on_its_remembered_model(qtbot):
    from tests.tab_helpers import new_window

    w = new_window(qtbot)
    assert w.tab("Image").model_combo.currentData() == "mnist-pixelcnn"
    assert w.tab("Image").select_model("bmnist-pixelcnn")
    w2 = new_window(qtbot)
    assert w2.tab("Image").model_combo.currentData() == "bmnist-pixelcnn"
    assert w2.tab("Text").model_combo.currentData() == w.tab("Text").model_combo.currentData() == "shakespeare-char"
