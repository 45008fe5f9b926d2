"""The History tab: every recorded run (studio/history/panel.py). The window attaches the store
when the app opens it (studio/app.py `attach_history`); until then the page says history is off."""

from __future__ import annotations

from PySide6.QtWidgets import QWidget

from studio.context import StudioContext
from studio.history.panel import HistoryPanel
from studio.tabs import register_tab


@register_tab("History", order=95)
def make_history_tab(ctx: StudioContext) -> QWidget:
    panel = HistoryPanel(ctx)
    panel.setObjectName("HistoryPanel")
    return panel
