"""Small widget and layout builders the studio's tabs share.

Every tab lays out bars of "Caption: control" pairs, columns of sections, a rich-text
status line, read-out labels and buttons with a tooltip and a slot. These helpers build
them one way, so a tab's `_build` says what it shows rather than how Qt wants it said,
and a change of style (a label's flags, a bar's spacing) lands in every tab at once.

File dialogs: `open_path` and `save_path` ask for a file unless one is given (tests and
scripts give one), starting in the home folder.

Layout items, as `hbox`, `vbox`, `column` and the groups of `labelled_row` take them:
    QWidget or QLayout       added as it is
    (item, stretch)          added with that stretch factor
    int                      that much spacing, in pixels
    STRETCH or Stretch(n)    a stretch
    str                      a caption (a plain QLabel)
    None                     nothing (for parts only some tabs have)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QDir, QEvent, QSize, Qt
from PySide6.QtWidgets import (
    QBoxLayout,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLayout,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)


@dataclass(frozen=True)
class Stretch:
    factor: int = 1


STRETCH = Stretch()


def add_items(layout: QBoxLayout, items) -> QBoxLayout:
    """Add layout `items` (see the module's docstring) to `layout`, in order; returns it."""
    for item in items:
        if item is None:
            continue
        if isinstance(item, Stretch):
            layout.addStretch(item.factor)
        elif isinstance(item, int):
            layout.addSpacing(item)
        elif isinstance(item, str):
            layout.addWidget(QLabel(item))
        elif isinstance(item, tuple):
            thing, stretch = item
            if isinstance(thing, QLayout):
                layout.addLayout(thing, stretch)
            else:
                layout.addWidget(thing, stretch)
        elif isinstance(item, QLayout):
            layout.addLayout(item)
        else:
            layout.addWidget(item)
    return layout


def hbox(*items) -> QHBoxLayout:
    """A horizontal layout of `items`."""
    return add_items(QHBoxLayout(), items)


def vbox(*items, parent: QWidget | None = None, margins: tuple[int, int, int, int] | None = None) -> QVBoxLayout:
    """A vertical layout of `items` (laid out on `parent` when given)."""
    layout = QVBoxLayout(parent) if parent is not None else QVBoxLayout()
    if margins is not None:
        layout.setContentsMargins(*margins)
    return add_items(layout, items)


def column(*items, name: str | None = None, margins: tuple[int, int, int, int] = (0, 0, 0, 0)) -> QWidget:
    """A widget holding `items` one above the other, with no margins of its own by default
    (a page, a panel, a column beside the canvas)."""
    widget = QWidget()
    if name:
        widget.setObjectName(name)
    vbox(*items, parent=widget, margins=margins)
    return widget


def labelled_row(*groups, spacing: int = 8, stretch: bool = True) -> QHBoxLayout:
    """A bar of settings: each group (a sequence of layout items, typically a caption and its
    control, `("Model:", (self.model_combo, 2))`) follows the last after `spacing` pixels; a
    stretch at the end keeps them together on the left unless `stretch` is False."""
    layout = QHBoxLayout()
    for i, group in enumerate(groups):
        if i:
            layout.addSpacing(spacing)
        add_items(layout, group)
    if stretch:
        layout.addStretch(1)
    return layout


def section_title(text: str, *, wrap: bool = False) -> QLabel:
    """A section's heading (styled by its object name, SectionTitle)."""
    label = QLabel(text)
    label.setObjectName("SectionTitle")
    if wrap:
        label.setWordWrap(True)
    return label


def status_label(object_name: str, text: str = "") -> QLabel:
    """A tab's status line: wrapped rich text the user can select and copy (seeds, commands)."""
    label = QLabel()
    label.setObjectName(object_name)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    if text:
        label.setText(text)
    return label


def readout_label(object_name: str) -> QLabel:
    """A wrapped, selectable line of numbers (a log-likelihood, a branch's totals)."""
    label = QLabel("")
    label.setObjectName(object_name)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def hint_label(*, wrap: bool = False, rich: bool = False) -> QLabel:
    """A small grey note (object name Hint): progress, the hovered pixel, playback."""
    label = QLabel("")
    label.setObjectName("Hint")
    if wrap:
        label.setWordWrap(True)
    if rich:
        label.setTextFormat(Qt.TextFormat.RichText)
    return label


class SteadyLabel(QWidget):
    """Holds a label whose text changes often (a status or progress line) so that a new text
    repaints the label and nothing else.

    A QLabel asks for a new layout at every setText: the request climbs to the window, whose
    relayout measures every wrapped rich-text label again (and a QTabWidget repaints the
    whole page). Here the label's parent has no layout: the request stops at this box, which
    only checks the height the text needs at its width (`heightForWidth` for a wrapped label)
    and changes its own fixed height, the one thing its layout must hear about, when that
    changes (a line more or fewer). Put it in the layout instead of the label; the label
    stays the object to set text on.

    `reserve`: a text whose height the box keeps even when the label's is smaller (empty, or a
    line fewer), e.g. "x<br>x" for two lines: a label that comes and goes (a run's totals, a
    status of one line or two) then moves nothing under or above it. Each move resized the
    Audio tab's plots, which then laid out and drew their axes again (by 1 pixel, at the start
    of every run: its totals line filled in)."""

    def __init__(self, label: QLabel, parent: QWidget | None = None, *, reserve: str | None = None) -> None:
        super().__init__(parent)
        self.label = label
        self._reserve = reserve
        self._floor: int | None = None  # the reserved height, measured once (after the style applies)
        label.setParent(self)
        self.setSizePolicy(label.sizePolicy().horizontalPolicy(), QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(label.minimumWidth())
        self._fit()

    def _needed_height(self) -> int:
        if self.label.hasHeightForWidth():  # word-wrapped: the height its lines need at this width
            return max(self._floor_height(), self.label.heightForWidth(max(1, self.width())))
        return max(self._floor_height(), self.label.sizeHint().height())

    def _floor_height(self) -> int:
        if self._reserve is None:
            return 0
        if self._floor is None:
            probe = QLabel(self._reserve)  # styled as the label (its object name), never shown
            probe.setObjectName(self.label.objectName())
            probe.setTextFormat(self.label.textFormat())
            probe.setFont(self.label.font())
            probe.ensurePolished()
            self._floor = probe.sizeHint().height()
            probe.deleteLater()
        return self._floor

    def _fit(self) -> None:
        h = self._needed_height()
        if h != self.minimumHeight() or h != self.maximumHeight():
            self.setFixedHeight(h)  # the layout hears of it (a line more or fewer)
        self.label.setGeometry(0, 0, self.width(), h)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(self.label.sizeHint().width(), self._needed_height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(self.label.minimumSizeHint().width(), self._needed_height())

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.LayoutRequest:  # the label's new text: stop here
            self._fit()
            return True
        return super().event(event)

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._fit()


def steady(label: QLabel, reserve: str | None = None) -> SteadyLabel:
    """`label` in a `SteadyLabel`: its new texts do not lay the window out again (nor, with
    `reserve`, a text shorter than that one)."""
    return SteadyLabel(label, reserve=reserve)


def push_button(text: str, tooltip: str | None = None, on_click: Callable[..., Any] | None = None) -> QPushButton:
    button = QPushButton(text)
    if tooltip:
        button.setToolTip(tooltip)
    if on_click is not None:
        button.clicked.connect(on_click)
    return button


def check_box(text: str, tooltip: str | None = None, checked: bool = False) -> QCheckBox:
    box = QCheckBox(text)
    if checked:
        box.setChecked(True)
    if tooltip:
        box.setToolTip(tooltip)
    return box


def compact_combo(min_contents: int, tooltip: str) -> QComboBox:
    """A combo box as wide as `min_contents` characters whatever its items (model names can be long)."""
    combo = QComboBox()
    combo.setMinimumContentsLength(min_contents)
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setToolTip(tooltip)
    return combo


def spin_box(minimum: int, maximum: int, value: int | None = None, tooltip: str | None = None,
             suffix: str = "") -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(minimum, maximum)
    if value is not None:
        spin.setValue(value)
    if suffix:
        spin.setSuffix(suffix)
    if tooltip:
        spin.setToolTip(tooltip)
    return spin


# --- file dialogs ------------------------------------------------------------------------------
def open_path(parent: QWidget, path: str | None, caption: str, file_filter: str) -> str | None:
    """`path`, or the file the user picks (starting at home); None when they cancel."""
    if path is None:
        path, _ = QFileDialog.getOpenFileName(parent, caption, QDir.homePath(), file_filter)
        return path or None
    return path


def save_path(parent: QWidget, path: str | None, caption: str, file_name: str, file_filter: str) -> str | None:
    """`path`, or the one the user picks (starting at home with `file_name`; `file_filter` and "All
    files"), with `file_name`'s suffix added when it has another; None when they cancel."""
    if path is None:
        start = str(Path(QDir.homePath()) / file_name)
        path, _ = QFileDialog.getSaveFileName(parent, caption, start, f"{file_filter};;All files (*)")
        if not path:
            return None
    suffix = Path(file_name).suffix
    if Path(path).suffix.lower() != suffix:
        path = str(path) + suffix
    return path
