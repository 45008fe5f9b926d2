"""The decoding panel: edits one `DecodingConfig` shared by every tab.

The panel never raises on a bad edit: it builds a `DecodingConfig` from the widgets after
every change, and when the config (or `build_chain`) refuses it with a `DecodingError`, the
message is shown in red and nothing is emitted. `configChanged` only ever carries a valid
config, so tabs can use whatever arrives without checking.

Each filter has an "on" checkbox instead of a magic value in its spin box: unticked sends
the filter's neutral value (top-k 0, top-p 1, ...), and ticking it again restores the value
the user had, which a spin box with a special "off" value could not do for top-p (off = its
maximum).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPixmap, QValidator
from PySide6.QtWidgets import (
    QAbstractItemView,
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engines.decoding.config import FILTER_NAMES, STRATEGIES, DecodingConfig
from engines.decoding.sampler_table import PENALTY_NAMES, SAMPLERS, SETTINGS, SPECS, Setting
from engines.errors import DecodingError

# How each filter is shown in the chain list and next to its checkbox (the table's labels).
FILTER_LABELS = {name: SPECS[name].label for name in FILTER_NAMES}

# The value that turns each sampler setting off (None: a setting that cannot turn it off).
_DEFAULTS = DecodingConfig()
OFF_VALUES = {st.field: st.off for st in SETTINGS}

# Presets change the sampling values and the strategy; the user's seed and chain order stay.
PRESETS: dict[str, dict[str, Any]] = {
    "Greedy": {"strategy": "greedy"},
    "Balanced": {"strategy": "sample", "top_p": 0.9, "temperature": 0.8},
    "Creative": {"strategy": "sample", "temperature": 1.1, "min_p": 0.05},
    "Precise": {"strategy": "sample", "top_k": 10, "temperature": 0.5},
    "Beam 4": {"strategy": "beam", "num_beams": 4},
}
CUSTOM = "Custom"

# build_chain uses only these filters for greedy and beam search (as HF applies logits
# processors but not warpers when not sampling); the panel greys out the others then.
PENALTY_FILTERS = PENALTY_NAMES

_NEUTRAL_FIELDS = (
    *(st.field for st in SETTINGS), "strategy", "num_beams", "length_penalty", "early_stopping",
    "num_return_sequences",
)


def apply_preset(name: str, base: DecodingConfig) -> DecodingConfig:
    """`base` with every sampling/beam value reset to neutral, then the preset's changes."""
    neutral = {f: getattr(_DEFAULTS, f) for f in _NEUTRAL_FIELDS}
    return base.replace(**{**neutral, **PRESETS[name]})


def matching_preset(config: DecodingConfig) -> str:
    for name in PRESETS:
        if apply_preset(name, config) == config:
            return name
    return CUSTOM


def chain_preview(config: DecodingConfig) -> str | None:
    """The sampler chain's `.name` for this config, or None while build_chain is absent.

    Raises DecodingError when the engine refuses the config.
    """
    try:
        from engines.decoding import build_chain
    except ImportError:
        return None
    if config.seed is not None:
        return build_chain(config, config.seed).name
    # Without a fixed seed each run draws its own; preview with 0 and say so rather than
    # showing a made-up number that would change on every edit.
    name = build_chain(config, 0).name
    return re.sub(r"\bseed 0(?!\d)", "seed random", name)


# --- small widgets ------------------------------------------------------------------------
class SeedSpinBox(QAbstractSpinBox):
    """A spin box for seeds in [0, 2**63): QSpinBox stops at 2**31 - 1, and a seed reported
    by a run must be typed back exactly to reproduce it."""

    valueChanged = Signal(object)  # int (too wide for a C++ int signal)
    MAXIMUM = 2**63 - 1

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._value = 0
        self.lineEdit().setText("0")
        self.setKeyboardTracking(False)
        self.setAccelerated(True)
        self.setAlignment(Qt.AlignmentFlag.AlignRight)
        self.editingFinished.connect(self._commit_text)

    def value(self) -> int:
        return self._value

    def setValue(self, value: int) -> None:  # noqa: N802 - Qt naming
        value = max(0, min(self.MAXIMUM, int(value)))
        self.lineEdit().setText(str(value))
        if value != self._value:
            self._value = value
            self.valueChanged.emit(value)

    def stepBy(self, steps: int) -> None:  # noqa: N802
        self._commit_text()  # step from what is typed, not from the last committed value
        self.setValue(self._value + steps)

    def stepEnabled(self) -> QAbstractSpinBox.StepEnabledFlag:  # noqa: N802
        flags = QAbstractSpinBox.StepEnabledFlag.StepNone
        if self._value > 0:
            flags |= QAbstractSpinBox.StepEnabledFlag.StepDownEnabled
        if self._value < self.MAXIMUM:
            flags |= QAbstractSpinBox.StepEnabledFlag.StepUpEnabled
        return flags

    def validate(self, text: str, pos: int) -> QValidator.State:
        if text == "":
            return QValidator.State.Intermediate
        if text.isdigit() and int(text) <= self.MAXIMUM:
            return QValidator.State.Acceptable
        return QValidator.State.Invalid

    def _commit_text(self) -> None:
        text = self.lineEdit().text()
        self.setValue(int(text) if text.isdigit() else self._value)

    def sizeHint(self) -> QSize:  # noqa: N802 - room for ~10 digits, not all 19
        hint = super().sizeHint()
        return QSize(max(hint.width(), self.fontMetrics().horizontalAdvance("0" * 11) + 30),
                     hint.height())


def dice_icon(size: int = 32) -> QIcon:
    """A die showing five, drawn rather than an emoji (no emoji font is guaranteed)."""
    pix = QPixmap(size, size)
    pix.fill(Qt.GlobalColor.transparent)
    p = QPainter(pix)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    m = size * 0.08
    p.setPen(QColor("#3b4252"))
    p.setBrush(QColor("#ffffff"))
    p.drawRoundedRect(m, m, size - 2 * m, size - 2 * m, size * 0.18, size * 0.18)
    p.setBrush(QColor("#3b4252"))
    p.setPen(Qt.PenStyle.NoPen)
    r = size * 0.08
    for fx, fy in ((0.3, 0.3), (0.7, 0.3), (0.5, 0.5), (0.3, 0.7), (0.7, 0.7)):
        p.drawEllipse(size * fx - r, size * fy - r, 2 * r, 2 * r)
    p.end()
    return QIcon(pix)


@dataclass
class _FilterRow:
    name: str  # the config field (a sampler's setting)
    check: QCheckBox | None  # None: always on (temperature), or a second setting of a sampler
    spin: QSpinBox | QDoubleSpinBox
    default_on: float  # the value the spin box starts at
    label: QLabel | None = None  # the name, when there is no checkbox
    sampler: str = ""  # the table entry it belongs to
    parent: str | None = None  # a second setting: the field whose checkbox turns its sampler on
    tip: str = ""  # its tooltip while the current model can use it


class DecodingPanel(QWidget):
    """Edits a DecodingConfig; emits `configChanged(config)` for each new valid config."""

    configChanged = Signal(object)

    def __init__(self, config: DecodingConfig | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("DecodingPanel")
        self._config = config or DecodingConfig()
        self._error: str | None = None
        self._updating = False  # set while set_config fills the widgets
        self._rows: dict[str, _FilterRow] = {}
        self._unsupported: dict[str, str] = {}  # sampler name -> why the current model cannot use it
        # Drag-and-drop in a QListWidget is a remove plus an insert; handle the order once
        # the drop has finished, not in between.
        self._chain_timer = QTimer(self)
        self._chain_timer.setSingleShot(True)
        self._chain_timer.setInterval(0)
        self._chain_timer.timeout.connect(self._on_edit)
        self._updating = True  # widgets fire change signals while they are being set up
        self._build()
        self._updating = False
        self.set_config(self._config)

    # --- public API ---------------------------------------------------------------------
    def config(self) -> DecodingConfig:
        """The last valid config (an invalid edit leaves it unchanged)."""
        return self._config

    def error(self) -> str | None:
        """The message of the current invalid edit, or None."""
        return self._error

    def set_config(self, config: DecodingConfig) -> None:
        """Show `config` in the widgets (emits configChanged if it differs)."""
        self._updating = True
        try:
            self.strategy.setCurrentText(config.strategy)
            for name, row in self._rows.items():
                value = getattr(config, name)
                if row.check is not None:
                    in_chain = name in config.chain or name not in FILTER_NAMES  # selectors are not in the chain
                    on = in_chain and value != OFF_VALUES[name]
                    row.check.setChecked(on)
                    if on:
                        row.spin.setValue(value)
                else:
                    row.spin.setValue(value)
            self._set_chain_order(config.chain)
            self.num_beams.setValue(config.num_beams)
            self.length_penalty.setValue(config.length_penalty)
            self.early_stopping.setChecked(config.early_stopping)
            self.num_return.setValue(config.num_return_sequences)
            self.fixed_seed.setChecked(config.seed is not None)
            if config.seed is not None:
                self.seed.setValue(config.seed)
        finally:
            self._updating = False
        self._accept(config)

    def apply_preset(self, name: str) -> None:
        self.set_config(apply_preset(name, self._config))

    def chain_order(self) -> tuple[str, ...]:
        return tuple(self.chain_list.item(i).data(Qt.ItemDataRole.UserRole)
                     for i in range(self.chain_list.count()))

    # --- building the widgets -------------------------------------------------------------
    def _build(self) -> None:
        # The settings sit in a scroll area so a short screen scrolls instead of clipping;
        # the chain preview and the error are pinned below it, so an edit's verdict is
        # always in sight however far the user has scrolled.
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.setSpacing(8)

        top = QGridLayout()
        top.setColumnStretch(1, 1)
        self.preset = QComboBox()
        self.preset.addItems([CUSTOM, *PRESETS])
        self.preset.setToolTip("Greedy: always the most likely value\n"
                               "Balanced: top-p 0.9, temperature 0.8\n"
                               "Creative: temperature 1.1, min-p 0.05\n"
                               "Precise: top-k 10, temperature 0.5\n"
                               "Beam 4: beam search with 4 beams")
        self.preset.activated.connect(self._on_preset)
        self.strategy = QComboBox()
        self.strategy.addItems(list(STRATEGIES))
        self.strategy.setToolTip("greedy: take the most likely value each step\n"
                                 "sample: draw from the filtered distribution\n"
                                 "beam: keep the best partial sequences (beam search)")
        self.strategy.currentTextChanged.connect(self._on_edit)
        top.addWidget(QLabel("Preset"), 0, 0)
        top.addWidget(self.preset, 0, 1)
        top.addWidget(QLabel("Strategy"), 1, 0)
        top.addWidget(self.strategy, 1, 1)
        top.addWidget(QLabel("Seed"), 2, 0)
        top.addLayout(self._build_seed(), 2, 1)
        layout.addLayout(top)

        # Beam settings first when shown: they belong to the strategy chosen just above.
        self.beam_box = self._build_beam()
        layout.addWidget(self.beam_box)
        layout.addWidget(self._build_samplers())
        layout.addWidget(self._build_chain_box())
        layout.addStretch(1)

        scroll = QScrollArea()
        scroll.setWidget(body)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

        # The live chain name and, in red, why the current edit is refused.
        chain_title = QLabel("Sampler chain")
        chain_title.setObjectName("SectionTitle")
        self.chain_label = QLabel()
        self.chain_label.setObjectName("ChainName")
        self.chain_label.setWordWrap(True)
        self.chain_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        mono = QFont("DejaVu Sans Mono")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.chain_label.setFont(mono)
        self.chain_label.setToolTip("The sampler chain these settings build, in order")
        self.error_label = QLabel()
        self.error_label.setObjectName("DecodingError")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c62828; font-weight: bold;")
        self.error_label.hide()
        footer = QWidget()
        fv = QVBoxLayout(footer)
        fv.setContentsMargins(8, 4, 8, 8)
        fv.setSpacing(4)
        fv.addWidget(chain_title)
        fv.addWidget(self.chain_label)
        fv.addWidget(self.error_label)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        outer.addWidget(scroll, 1)
        outer.addWidget(footer)
        # Wide enough for the longest label plus a spin box: never clipped horizontally.
        body.adjustSize()
        self.setMinimumWidth(body.minimumSizeHint().width() + 20)

    def _double(self, lo: float, hi: float, step: float, decimals: int) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setRange(lo, hi)
        spin.setSingleStep(step)
        spin.setDecimals(decimals)
        spin.setKeyboardTracking(False)  # one change per Enter/arrow, not per keystroke
        spin.setAlignment(Qt.AlignmentFlag.AlignRight)
        spin.valueChanged.connect(self._on_edit)
        return spin

    def _int(self, lo: int, hi: int) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(lo, hi)
        spin.setKeyboardTracking(False)
        spin.setAlignment(Qt.AlignmentFlag.AlignRight)
        spin.valueChanged.connect(self._on_edit)
        return spin

    def _build_samplers(self) -> QGroupBox:
        """One row per sampler setting of the table of samplers, in table order."""
        box = QGroupBox("Samplers")
        grid = QGridLayout(box)
        grid.setColumnStretch(0, 1)
        r = 0
        for spec in SAMPLERS:
            for i, setting in enumerate(spec.settings):
                spin = self._spin_for(setting)
                first = i == 0
                tip = spec.help if first else setting.help
                spin.setToolTip(tip)
                label = check = None
                if first and spec.toggle:
                    check = QCheckBox(setting.label)
                    check.setToolTip(tip + "\nUntick to turn it off")
                    check.toggled.connect(self._on_edit)  # also enables the spin box
                    spin.setEnabled(False)
                    grid.addWidget(check, r, 0)
                else:
                    label = QLabel(setting.label)
                    label.setToolTip(tip)
                    grid.addWidget(label, r, 0)
                grid.addWidget(spin, r, 1)
                self._rows[setting.field] = _FilterRow(
                    setting.field, check, spin, setting.on_value, label, sampler=spec.name,
                    parent=None if first else spec.settings[0].field, tip=tip)
                r += 1
        return box

    def _spin_for(self, setting: Setting) -> QSpinBox | QDoubleSpinBox:
        # Ranges are generous on purpose: values the config refuses (top-p 0, min-p 1,
        # repetition penalty 0) stay reachable so the user sees *why* they are refused.
        lo, hi = setting.panel_range
        if setting.type is int:
            spin = self._int(int(lo), int(hi))
        else:
            spin = self._double(lo, hi, setting.panel_step, setting.panel_decimals)
        spin.setValue(setting.on_value)
        if setting.field == "temperature":
            spin.setSpecialValueText("0 (greedy)")
        return spin

    def set_supported(self, mapping: dict[str, str | None]) -> None:
        """Grey out the samplers the current tab's model cannot use, the reason on hover.

        `mapping` is `engines.decoding.support.supported_samplers(kind, card)`: sampler name ->
        None (usable) or why not. Values stay as they are (the engines refuse a config that turns
        an unusable sampler on, saying why); a ticked one keeps its checkbox so it can be unticked."""
        self._unsupported = {name: why for name, why in mapping.items() if why}
        self._update_visibility()
        self._update_chain_items(self._config)

    def unsupported(self) -> dict[str, str]:
        """Sampler name -> why the current model cannot use it (what set_supported greyed out)."""
        return dict(self._unsupported)

    def _build_chain_box(self) -> QGroupBox:
        box = QGroupBox("Chain order")
        v = QVBoxLayout(box)
        hint = QLabel("Drag to reorder: top runs first.")
        hint.setWordWrap(True)
        hint.setObjectName("Hint")
        self.chain_list = QListWidget()
        self.chain_list.setObjectName("ChainList")
        self.chain_list.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.chain_list.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.chain_list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.chain_list.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        for name in FILTER_NAMES:
            item = QListWidgetItem(FILTER_LABELS[name])
            item.setData(Qt.ItemDataRole.UserRole, name)
            self.chain_list.addItem(item)
        # Tall enough to show all seven without a scroll bar.
        rows = self.chain_list.sizeHintForRow(0) * len(FILTER_NAMES)
        self.chain_list.setFixedHeight(rows + 2 * self.chain_list.frameWidth() + 4)
        model = self.chain_list.model()
        for sig in (model.rowsMoved, model.rowsInserted, model.rowsRemoved):
            sig.connect(lambda *_: self._updating or self._chain_timer.start())
        v.addWidget(hint)
        v.addWidget(self.chain_list)
        return box

    def _build_beam(self) -> QGroupBox:
        box = QGroupBox("Beam search")
        grid = QGridLayout(box)
        grid.setColumnStretch(0, 1)
        self.num_beams = self._int(1, 64)
        self.num_beams.setToolTip("How many partial sequences are kept each step")
        self.length_penalty = self._double(-5.0, 5.0, 0.1, 2)
        self.length_penalty.setToolTip("score = sum of log-probabilities / length ** penalty;"
                                       "\n> 0 favours longer sequences")
        self.early_stopping = QCheckBox("Early stopping")
        self.early_stopping.setToolTip("Stop once num-beams hypotheses are finished")
        self.early_stopping.toggled.connect(self._on_edit)
        self.num_return = self._int(1, 64)
        self.num_return.setToolTip("How many of the best beams to return (at most num-beams)")
        grid.addWidget(QLabel("beams"), 0, 0)
        grid.addWidget(self.num_beams, 0, 1)
        grid.addWidget(QLabel("length penalty"), 1, 0)
        grid.addWidget(self.length_penalty, 1, 1)
        grid.addWidget(QLabel("return sequences"), 2, 0)
        grid.addWidget(self.num_return, 2, 1)
        grid.addWidget(self.early_stopping, 3, 0, 1, 2)
        return box

    def _build_seed(self) -> QHBoxLayout:
        h = QHBoxLayout()
        h.setSpacing(4)
        self.fixed_seed = QCheckBox("fixed")
        self.fixed_seed.setToolTip("Ticked: every run uses this seed and repeats exactly.\n"
                                   "Unticked: each run draws a fresh seed and reports it.")
        self.seed = SeedSpinBox()
        self.seed.setEnabled(False)
        self.seed.setToolTip("The seed of the random draw")
        self.seed.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.dice = QToolButton()
        self.dice.setObjectName("Dice")
        self.dice.setIcon(dice_icon())
        self.dice.setIconSize(QSize(18, 18))
        self.dice.setToolTip("Pick a random seed and fix it")
        self.dice.clicked.connect(self.randomize_seed)
        self.fixed_seed.toggled.connect(self.seed.setEnabled)
        self.fixed_seed.toggled.connect(self._on_edit)
        self.seed.valueChanged.connect(self._on_edit)
        h.addWidget(self.fixed_seed)
        h.addWidget(self.seed, 1)
        h.addWidget(self.dice)
        return h

    # --- reacting to edits ----------------------------------------------------------------
    def randomize_seed(self) -> None:
        # 31 bits: short enough to read out and type back; any seed below 2**63 is accepted.
        self._updating = True
        try:
            self.fixed_seed.setChecked(True)
            self.seed.setValue(random.randrange(2**31))
        finally:
            self._updating = False
        self._on_edit()

    def _set_chain_order(self, chain: tuple[str, ...]) -> None:
        # Filters missing from `chain` go to the end; set_config turns them off, which is
        # what leaving them out of the chain meant.
        order = [*chain, *(n for n in FILTER_NAMES if n not in chain)]
        if order == list(self.chain_order()):
            return
        self.chain_list.clear()
        for name in order:
            item = QListWidgetItem(FILTER_LABELS[name])
            item.setData(Qt.ItemDataRole.UserRole, name)
            self.chain_list.addItem(item)

    def _on_preset(self, index: int) -> None:
        name = self.preset.itemText(index)
        if name in PRESETS:
            self.apply_preset(name)

    def _widget_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {"strategy": self.strategy.currentText()}
        for name, row in self._rows.items():
            on = row.check is None or row.check.isChecked()
            value = row.spin.value() if on else OFF_VALUES[name]
            if isinstance(row.spin, QDoubleSpinBox):
                value = float(value)
            values[name] = value
        values["chain"] = self.chain_order()
        values["num_beams"] = self.num_beams.value()
        values["length_penalty"] = float(self.length_penalty.value())
        values["early_stopping"] = self.early_stopping.isChecked()
        values["num_return_sequences"] = self.num_return.value()
        values["seed"] = self.seed.value() if self.fixed_seed.isChecked() else None
        return values

    def _on_edit(self, *_: Any) -> None:
        if self._updating:
            return
        self._update_visibility()
        try:
            config = DecodingConfig(**self._widget_values())
        except DecodingError as exc:
            self._show_error(str(exc))
            return
        self._accept(config)

    def _accept(self, config: DecodingConfig) -> None:
        """Show `config`'s chain; emit it if valid and new, else show why not."""
        self._update_visibility()
        try:
            preview = chain_preview(config)
        except DecodingError as exc:  # the engine may refuse combinations the config allows
            self._show_error(str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a preview bug must not block decoding edits
            preview = f"(chain preview failed: {type(exc).__name__}: {exc})"
        self._error = None
        self.error_label.hide()
        self.chain_label.setEnabled(True)
        self.chain_label.setText(preview if preview is not None else self._plain_chain(config))
        self._update_chain_items(config)
        self.preset.setCurrentText(matching_preset(config))
        if config != self._config:
            self._config = config
            self.configChanged.emit(config)

    def _show_error(self, message: str) -> None:
        self._error = message
        self.error_label.setText(message)
        self.error_label.show()
        self.chain_label.setEnabled(False)  # greyed: it describes the last *valid* config

    @staticmethod
    def _plain_chain(config: DecodingConfig) -> str:
        # Shown only while engines.decoding.build_chain does not exist yet.
        return "(chain preview needs engines.decoding.build_chain)"

    def _update_chain_items(self, config: DecodingConfig) -> None:
        """Show each filter's value (or 'off') beside its name in the chain list."""
        for i in range(self.chain_list.count()):
            item = self.chain_list.item(i)
            name = item.data(Qt.ItemDataRole.UserRole)
            value = getattr(config, name)
            unused = config.strategy != "sample" and name not in PENALTY_FILTERS
            off = value == OFF_VALUES[name] and name != "temperature"
            why_not = self._unsupported.get(name)
            shown = ("not for this model" if why_not else f"not used by {config.strategy}" if unused
                     else "off" if off else f"{value:g}")
            item.setText(f"{i + 1}. {FILTER_LABELS[name]}  —  {shown}")
            item.setToolTip(why_not or "")
            dim = off or unused or bool(why_not)
            item.setForeground(QColor("#8a8f98") if dim else self.palette().text().color())

    def _update_visibility(self) -> None:
        strategy = self.strategy.currentText()
        self.beam_box.setVisible(strategy == "beam")
        # Greedy and beam search use only the penalties: grey out what has no effect.
        for name, row in self._rows.items():
            used = strategy == "sample" or row.sampler in PENALTY_FILTERS
            why_not = self._unsupported.get(row.sampler)
            owner = self._rows[row.parent].check if row.parent else row.check  # the sampler's on/off box
            on = owner is None or owner.isChecked()
            label = row.check if row.check is not None else row.label
            # an unusable sampler stays untickable (so a leftover value can be turned off) but no more
            label.setEnabled(used and (not why_not or (row.check is not None and row.check.isChecked())))
            row.spin.setEnabled(used and on and not why_not)
            label.setToolTip(f"Not for this model: {why_not}" if why_not else
                             row.tip + ("\nUntick to turn it off" if row.check is not None else ""))
            row.spin.setToolTip(f"Not for this model: {why_not}" if why_not else row.tip)
