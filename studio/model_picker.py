"""The model combo box a modality tab keeps: select by id, and the chosen model's card.

A mixin for tab widgets that own `self.model_combo` (item data = model id), `self._infos`
(id -> ModelInfo) and the StatusLineMixin's `_say_error`; `MODEL_KIND` names the kind in messages.
"""

from __future__ import annotations


class ModelPickerMixin:
    MODEL_KIND = "model"

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
