"""The model combo box a modality tab keeps: its models, the page without any, select by id.

A mixin for tab widgets that own `self.model_combo` (item data = model id), `self._infos`
(id -> ModelInfo), `self.ctx` (StudioContext) and the StatusLineMixin's `_say_error`;
`MODEL_KIND` names the kind in messages. It lists the usable models (a folder that cannot
be listed is said, never raised), fills the combo keeping the choice, shows the page that
says how to get a model when there is none, and answers which model is chosen.
"""

from __future__ import annotations

import html
import logging
from typing import Iterable

log = logging.getLogger(__name__)


class ModelPickerMixin:
    MODEL_KIND = "model"

    def _build_model_pages(self, main, empty_text: str, empty_name: str, margins=(10, 10, 10, 6)) -> None:
        """`self.pages`: page 0 says how to get a model (`self.empty_label`, with a "Look again"
        button calling `self.refresh_models`), page 1 is `main`; laid out as the whole tab."""
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QLabel, QStackedWidget, QVBoxLayout, QWidget

        from studio.widgets import push_button

        self.empty_label = QLabel(empty_text)
        self.empty_label.setObjectName(empty_name)
        self.empty_label.setWordWrap(True)
        self.empty_label.setTextFormat(Qt.TextFormat.RichText)
        self.empty_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.empty_label.setFixedWidth(600)  # a fixed width lets the wrapped text get its full height
        rescan = push_button("Look again", "Search the models folders again", self.refresh_models)
        empty = QWidget()
        ev = QVBoxLayout(empty)
        ev.addStretch(1)
        ev.addWidget(self.empty_label, 0, Qt.AlignmentFlag.AlignHCenter)
        ev.addWidget(rescan, 0, Qt.AlignmentFlag.AlignHCenter)
        ev.addStretch(2)
        self.pages = QStackedWidget()
        self.pages.addWidget(empty)
        self.pages.addWidget(main)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(*margins)
        layout.addWidget(self.pages)

    # --- the models ------------------------------------------------------------------------------
    def _usable_models(self, kind: str | None = None) -> list:
        """The usable models (of `kind`, if given) in the models folders; a folder that cannot be
        listed is said on the status line, not raised."""
        from engines.errors import ChainruleError

        try:
            return [m for m in self.ctx.list_models() if m.usable and (kind is None or m.kind == kind)]
        except ChainruleError as exc:
            self._say_error(str(exc))
        except Exception as exc:  # noqa: BLE001 - a broken folder must not take the tab down
            log.exception("listing models failed")
            self._say_error(f"Listing models failed: {type(exc).__name__}: {exc}")
        return []

    def _fill_model_combo(self, entries: Iterable[tuple[str, str, str]], *, fallback: str | None = None,
                          placeholder: str | None = None) -> None:
        """The combo's items, (model id, text, tooltip) each, without a signal: the model chosen
        before stays chosen, else the one the user chose last session, else the tab's preferred
        model (`prefers_model`), else `fallback`, else the first; `placeholder` (no data) when none."""
        from PySide6.QtCore import Qt

        combo = self.model_combo
        self._remember_choices()
        current = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        for model_id, text, tooltip in entries:
            combo.addItem(text, model_id)
            combo.setItemData(combo.count() - 1, tooltip, Qt.ItemDataRole.ToolTipRole)
        if placeholder is not None and not combo.count():
            combo.addItem(placeholder, None)
        for wanted in (current, self.ctx.remembered_model(self.MODEL_KIND), self._preferred_model_id(), fallback):
            index = combo.findData(wanted) if wanted else -1
            if index >= 0:
                break
        combo.setCurrentIndex(max(0, index))
        combo.blockSignals(False)

    # --- the model a tab opens on ------------------------------------------------------------------
    # A fresh tab (no choice remembered, or the remembered model gone) opens on the first listed
    # model that `prefers_model` accepts: the one that shows the tab best. Tabs override it.
    def prefers_model(self, info) -> bool:
        """Whether `info` (a usable ModelInfo of this tab) is one the tab opens on by preference."""
        return False

    def _preferred_model_id(self) -> str | None:
        for i in range(self.model_combo.count()):
            info = self._infos.get(self.model_combo.itemData(i))
            if info is not None and self.prefers_model(info):
                return info.id
        return None

    def _remember_choices(self) -> None:
        """From now on, every model chosen in the combo (by the user, or by reopening a request) is
        saved in the settings, so the next session opens on it; fills (signals blocked) are not."""
        if getattr(self, "_remembering_choices", False):
            return
        self._remembering_choices = True

        def remember(_index: int) -> None:
            model_id = self.model_combo.currentData()
            if model_id:
                self.ctx.remember_model(self.MODEL_KIND, model_id)

        self.model_combo.currentIndexChanged.connect(remember)

    def _show_models_found(self, any_usable: bool, empty_text: str, problems: list[str] = ()) -> None:
        """The page to show, and the empty page's text with the models found but not usable."""
        self.pages.setCurrentIndex(1 if any_usable else 0)
        text = empty_text
        if problems:
            text += "<p style='color:#c62828'>Found but not usable: " + html.escape("; ".join(problems)) + "</p>"
        self.empty_label.setText(text)
        # A wrapped rich-text label underestimates its height in a layout: ask it for the real one.
        self.empty_label.setMinimumHeight(self.empty_label.heightForWidth(self.empty_label.width()) + 24)

    def model_ids(self) -> list[str]:
        return [self.model_combo.itemData(i) for i in range(self.model_combo.count())
                if self.model_combo.itemData(i) is not None]

    # --- the choice ------------------------------------------------------------------------------
    def select_model(self, model_id: str) -> bool:
        i = self.model_combo.findData(model_id)
        if i >= 0:
            self.model_combo.setCurrentIndex(i)
        return i >= 0

    def current_model_info(self):
        """The chosen ModelInfo, or None (quietly: for the decoding dock's header and probes)."""
        model_id = self.model_combo.currentData()
        return self._infos.get(model_id) if model_id else None

    def chosen_model(self):
        """The chosen ModelInfo, or None after telling the user why there is none."""
        model_id = self.model_combo.currentData()
        info = self._infos.get(model_id) if model_id else None
        if info is None:
            self._say_error(f"No {self.MODEL_KIND} model chosen: add a models folder with one in the Models tab.")
        return info
