"""The model combo box a modality tab keeps: select by id, and the chosen model's card.

A mixin for tab widgets that own `self.model_combo` (item data = model id), `self._infos`
(id -> ModelInfo) and the StatusLineMixin's `_say_error`; `MODEL_KIND` names the kind in messages.
"""

from __future__ import annotations


class ModelPickerMixin:
    MODEL_KIND = "model"

    def _build_model_pages(self, main, empty_text: str, empty_name: str, margins=(10, 10, 10, 6)) -> None:
        """`self.pages`: page 0 says how to get a model (`self.empty_label`, with a "Look again"
        button calling `self.refresh_models`), page 1 is `main`; laid out as the whole tab."""
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QLabel, QPushButton, QStackedWidget, QVBoxLayout, QWidget

        self.empty_label = QLabel(empty_text)
        self.empty_label.setObjectName(empty_name)
        self.empty_label.setWordWrap(True)
        self.empty_label.setTextFormat(Qt.TextFormat.RichText)
        self.empty_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.empty_label.setFixedWidth(600)  # a fixed width lets the wrapped text get its full height
        rescan = QPushButton("Look again")
        rescan.setToolTip("Search the models folders again")
        rescan.clicked.connect(self.refresh_models)
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

    def select_model(self, model_id: str) -> bool:
        i = self.model_combo.findData(model_id)
        if i >= 0:
            self.model_combo.setCurrentIndex(i)
        return i >= 0

    def chosen_model(self):
        """The chosen ModelInfo, or None after telling the user why there is none."""
        model_id = self.model_combo.currentData()
        info = self._infos.get(model_id) if model_id else None
        if info is None:
            self._say_error(f"No {self.MODEL_KIND} model chosen: add a models folder with one in the Models tab.")
        return info
