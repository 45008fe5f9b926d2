"""The Text tab: generate with every token's probability in view, branch, score and compare.

Layout: a bar (model, max new tokens, stop strings); on the left the prompt, the run buttons
and the branch tree; on the right three pages: Tokens (the shown branch, coloured), Compare
and Score; a status line at the bottom (seed, chain, tokens/s, notes).

Generation
    Generate makes a new root branch from the prompt; Continue extends the shown branch;
    Regenerate makes a sibling of the shown branch from the same starting point (the prompt,
    or the prompt + the parent's tokens + the picked token) with a fresh seed unless the
    decoding panel fixes one; clicking a token and picking an alternative makes a child
    branch = prompt + the tokens before it + the pick, and generation goes on from there.
    Every run is a `TextRequest` (engines/text/request.py) built from the widgets and the
    tab's own decoding config (which starts at the model card's defaults), its seed drawn
    before it starts and always shown; it runs on `engines.text.request.run`, the runner
    `chainrule generate text` uses, so a Generate with seed s produces exactly what
    `chainrule generate text --prompt P --seed s --max-new-tokens N` produces. A branch's later
    runs carry the branch's tokens in the request (`prefix_ids`).

Chat
    For a model whose tokenizer_config.json has a chat_template, Mode offers Chat: the prompt box
    is the user's turn (after an optional system turn), rendered with the model's template
    (engines/text/chat.py, in a sandbox, as transformers renders it); the reply is generated until
    the end-of-turn token and is a branch like any other (its tokens inspectable, pickable,
    continued, regenerated; Score its text from the branch menu, after the rendered turns). Reply
    makes a child branch whose turns are the shown branch's, its reply and the prompt box's new turn.
    The request carries the turns, so a chat's JSON export runs with `chainrule generate --from`.

Requests and history
    Every run is recorded (`ctx.record_run_started` / `record_run_finished`; parent: the run a
    continuation, pick or regeneration came from) with the branch's JSON export. The JSON
    export carries `"request"`, which `chainrule generate --from` turns into the same text, and
    `apply_request` restores the tab to. `history_state` / `restore_history_state` save and
    restore the whole branch tree (bounded in size) across restarts.

Branches
    Nothing generated is lost until deleted: a stopped run keeps its tokens. Each branch
    holds a full copy of its tokens, so Delete removes only the selected branch and its
    children move up to its parent (re-parented, never deleted with it).

All model work runs on TaskRunners (one for generation, one for Compare, one for Score);
tokens are appended from the runner's ~30 ms batches, never re-rendered per token.

The branch tree (items, labels, tooltips, menu, reproducing commands) lives in
studio/text/branch_tree.py, the Compare and Score pages in studio/text/compare_view.py and
studio/text/score_view.py.
"""

from __future__ import annotations

import html
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QDir, QPoint, Qt
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QSplitter,
    QTabWidget,
    QTreeWidgetItem,
    QWidget,
)

from engines.decoding import build_chain
from engines.decoding.config import DecodingConfig
from engines.errors import ChainruleError, InputError
from engines.text.request import TextRequest
from studio.context import StudioContext
from studio.model_picker import ModelPickerMixin
from studio.status_line import StatusLineMixin, next_seed_text
from studio.tabs import register_tab
from studio.text import work
from studio.text.branch_tree import BranchTreeMixin, first_words
from studio.text.colours import MODE_LABELS, MODES
from studio.text.compare_view import CompareView
from studio.text.score_view import ScoreView
from studio.text.token_view import Legend, TokenView, visible
from studio.text.work import Branch, BranchStore, Segment
from studio.widgets import (
    STRETCH,
    column,
    compact_combo,
    hbox,
    labelled_row,
    push_button,
    readout_label,
    section_title,
    spin_box,
    status_label,
    vbox,
)
from studio.worker_tab import RunnerMixin

DEFAULT_MAX_NEW_TOKENS = 200
MAX_NEW_TOKENS_LIMIT = 100_000


def parse_stop_strings(text: str) -> tuple[str, ...]:
    """Comma-separated stop strings; `\\,` is a comma, `\\n` a newline, `\\t` a tab, `\\\\` a backslash."""
    out, cur, i = [], [], 0
    escapes = {"n": "\n", "t": "\t", ",": ",", "\\": "\\"}
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in escapes:
            cur.append(escapes[text[i + 1]])
            i += 2
            continue
        if ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return tuple(s for s in (s.strip(" ") for s in out) if s)


def format_stop_strings(stops) -> str:
    """The stop-strings field's text for `stops`: the inverse of `parse_stop_strings`."""
    escape = lambda t: t.replace("\\", "\\\\").replace(",", "\\,").replace("\n", "\\n").replace("\t", "\\t")  # noqa: E731
    return ", ".join(escape(s) for s in stops)


def read_branch_export(path) -> dict[str, Any]:
    """The Text tab's JSON export at `path`, its fields checked (InputError naming the problem)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_EXPORT_BYTES:
            raise InputError(f"{p.name} is {size:,} bytes; a branch export is at most {MAX_EXPORT_BYTES:,}")
        data = json.loads(p.read_bytes())
    except OSError as exc:
        raise InputError(f"cannot read {p.name}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError):
        raise InputError(f"{p.name} is not valid JSON") from None
    need = ("model", "prompt", "token_ids", "tokens", "logprobs")
    if not isinstance(data, dict) or any(k not in data for k in need):
        raise InputError(f"{p.name} is not a Text-tab branch export (it needs {', '.join(need)})")
    n = len(data["token_ids"]) if isinstance(data["token_ids"], list) else -1
    if not (isinstance(data["tokens"], list) and isinstance(data["logprobs"], list)
            and n == len(data["tokens"]) == len(data["logprobs"])):
        raise InputError(f"{p.name}: token_ids, tokens and logprobs must be lists of the same length")
    return data


MAX_EXPORT_BYTES = 64 * 1024 * 1024
PLAIN_PLACEHOLDER = "Prompt (empty: start from the document-start token)"
CHAT_PLACEHOLDER = "Your turn (rendered with the model's chat template; the reply is a branch)"
HISTORY_STATE_VERSION = 1
MAX_SAVED_PROMPT = 100_000  # characters of the prompt field kept in the history state


class TextTab(BranchTreeMixin, RunnerMixin, StatusLineMixin, ModelPickerMixin, QWidget):
    MODEL_KIND = "text"
    # A fresh Text tab opens on the Shakespeare model: one token per character, so every coloured
    # token and its alternatives read as letters, and its play-like text is recognisable at once.
    PREFERRED_MODEL = "shakespeare-char"

    def prefers_model(self, info) -> bool:
        return info.id == self.PREFERRED_MODEL

    def __init__(self, ctx: StudioContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.store = BranchStore()
        self.runner = ctx.task_runner("Text", parent=self)
        self._infos: dict[str, Any] = {}  # model id -> ModelInfo (text models, usable)
        self._items: dict[int, QTreeWidgetItem] = {}
        self._shown: int | None = None  # branch on the Tokens page
        self._notes: dict[int, list[str]] = {}  # per branch, said in the status line
        self._run: dict[str, Any] | None = None  # the current/last generation run
        self._cancel = threading.Event()
        self._defaults_of: str | None = None  # the model whose card defaults the config started from
        self._chat_of: dict[str, bool] = {}  # model folder -> has a chat template
        self._build()
        ctx.modelDirsChanged.connect(self.refresh_models)
        self.model_combo.currentIndexChanged.connect(lambda _i: self._model_changed())
        ctx.decodingConfigChanged.connect(lambda key, c: key == "text" and self._config_changed(c))
        self.runner.busyChanged.connect(self._busy_changed)
        self.refresh_models()
        self._config_changed(ctx.decoding_config("text"))
        self._update_buttons()

    # --- widgets -----------------------------------------------------------------------
    def _build(self) -> None:
        self.model_combo = compact_combo(18, "Text models found in the models folders (see the Models tab)")
        self.max_tokens = spin_box(1, MAX_NEW_TOKENS_LIMIT, DEFAULT_MAX_NEW_TOKENS,
                                   "New tokens per run (Generate, Continue, Regenerate, a pick, Compare)")
        self.stop_edit = QLineEdit()
        self.stop_edit.setPlaceholderText("stop strings, comma-separated (\\n newline, \\, comma)")
        self.stop_edit.setToolTip(
            "Generation stops once the text it produced contains one of these.\n"
            "Separate several with commas; write \\n for a newline, \\t for a tab, \\, for a comma.")
        bar = labelled_row(("Model:", (self.model_combo, 2)), ("Max new tokens:", self.max_tokens),
                           ("Stop at:", (self.stop_edit, 3)), spacing=12, stretch=False)

        # Left: prompt, run buttons, branches.
        self.prompt = QPlainTextEdit()
        self.prompt.setObjectName("PromptEdit")
        self.prompt.setPlaceholderText(PLAIN_PLACEHOLDER)
        # Chat mode (models whose tokenizer_config.json has a chat_template): the prompt box is the
        # user's turn, rendered with the template after the optional system turn; Reply adds the
        # shown branch (the assistant's reply) and a new user turn to that branch's conversation.
        self.chat_combo = QComboBox()
        self.chat_combo.addItem("Plain", "plain")
        self.chat_combo.addItem("Chat", "chat")
        self.chat_combo.setToolTip("Plain: the prompt is continued as it is.\nChat (models with a chat template): "
                                   "the prompt is your turn, rendered with the model's chat template; the reply "
                                   "ends at its end-of-turn token")
        self.chat_combo.currentIndexChanged.connect(lambda _i: self._update_chat_widgets())
        self.system_edit = QLineEdit()
        self.system_edit.setObjectName("SystemEdit")
        self.system_edit.setPlaceholderText("system turn (optional)")
        self.reply_button = push_button(
            "Reply", "Chat: the shown branch's reply and the prompt box (your next turn) continue its conversation",
            self.reply)
        self.generate_button = push_button(
            "Generate", "A new branch from the prompt with the decoding panel's settings (Ctrl+Enter in the prompt)",
            self.generate)
        QShortcut(QKeySequence("Ctrl+Return"), self.prompt, self.generate)
        self.stop_button = push_button("Stop", "Stop now; the tokens so far are kept", self.stop)
        self.continue_button = push_button(
            "Continue", "Generate more tokens at the end of the shown branch", self.continue_branch)
        self.regenerate_button = push_button("Regenerate", None, self.regenerate)
        self._build_branch_tree()
        self.delete_button = push_button("Delete", "Delete the selected branch; its children move up to its parent",
                                         lambda: self.delete_branch(self._shown))
        self.export_text_button = push_button("Export text…", None, self.export_text)
        self.export_json_button = push_button(
            "Export JSON…", "Tokens, ids, log-probabilities, settings, seed, model and prompt", self.export_json)
        left = column(
            section_title("Prompt"), labelled_row(("Mode:", self.chat_combo), ((self.system_edit, 1),), stretch=False),
            (self.prompt, 2),
            hbox(self.generate_button, self.stop_button, self.continue_button, self.regenerate_button, self.reply_button),
            section_title("Branches"), (self.tree, 3),
            hbox(self.delete_button, STRETCH, self.export_text_button, self.export_json_button))

        # Right: Tokens / Compare / Score pages.
        self.view = TokenView()
        self.view.setObjectName("TokenView")
        self.view.tokenClicked.connect(self._token_clicked)
        self.view.setPlaceholderText("Tokens appear here: hover for alternatives, click to branch")
        self.mode_combo = QComboBox()
        for m in MODES:
            self.mode_combo.addItem(MODE_LABELS[m], m)
        self.mode_combo.setToolTip("What the token colours show")
        self.mode_combo.currentIndexChanged.connect(lambda _i: self.set_colour_mode(self.mode_combo.currentData()))
        self.legend = Legend("probability")
        self.branch_info = readout_label("Hint")
        modes = labelled_row(("Colour by:", self.mode_combo), ((self.branch_info, 1),), stretch=False)
        tokens_page = column(modes, self.legend, (self.view, 1), margins=(6, 6, 6, 6))

        self.compare = CompareView(self.ctx, self._compare_request)
        self.score = ScoreView(self.ctx, self.chosen_model)
        self.pages = QTabWidget()
        self.pages.setObjectName("TextPages")
        self.pages.addTab(tokens_page, "Tokens")
        self.pages.addTab(self.compare, "Compare")
        self.pages.addTab(self.score, "Score")

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(self.pages)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 5)
        split.setSizes([330, 800])

        self.status = status_label("TextStatus", "Choose a model, write a prompt and press Generate.")
        vbox(bar, (split, 1), self.status, parent=self, margins=(10, 10, 10, 6))

    # --- models ------------------------------------------------------------------------
    def refresh_models(self) -> None:
        models = self._usable_models("text")
        # Forget nothing a branch may still need: infos of vanished models stay until replaced.
        for m in models:
            self._infos[m.id] = m
        self._fill_model_combo(((m.id, m.id, str(m.path)) for m in models),
                               placeholder="no text models: add a models folder (Models tab)")
        self._model_changed()
        self._update_buttons()

    def _model_changed(self) -> None:
        """A newly chosen model: the tab's decoding config becomes its card's defaults (and Chat
        mode is offered when it has a chat template)."""
        self._update_chat_widgets()
        model_id = self.model_combo.currentData()
        info = self._infos.get(model_id) if model_id else None
        if info is None or model_id == self._defaults_of:
            return
        self._defaults_of = model_id
        self.ctx.adopt_model_defaults(self.MODEL_KIND, info.card.get("decoding_defaults"))

    def _branch_model(self, branch: Branch):
        info = self._infos.get(branch.model_id)
        if info is None:
            self._say_error(f"Model {branch.model_id!r} of this branch is no longer installed.")
        return info

    # --- chat ----------------------------------------------------------------------------------
    def chat_available(self, info=None) -> bool:
        """Does the (chosen) model offer a chat template? Read once per folder (a small JSON file)."""
        from engines.text.chat import has_chat_template

        info = info if info is not None else self.current_model_info()
        if info is None:
            return False
        key = str(info.path)
        if key not in self._chat_of:
            self._chat_of[key] = has_chat_template(info.path)
        return self._chat_of[key]

    def is_chat(self) -> bool:
        return self.chat_combo.currentData() == "chat" and self.chat_available()

    def set_chat_mode(self, on: bool) -> bool:
        """Chat mode on (when the model has a chat template) or off; whether it is on now."""
        self.chat_combo.setCurrentIndex(self.chat_combo.findData("chat" if on else "plain"))
        self._update_chat_widgets()
        return self.is_chat()

    def _update_chat_widgets(self) -> None:
        if not hasattr(self, "chat_combo"):
            return
        available = self.chat_available()
        item = self.chat_combo.model().item(self.chat_combo.findData("chat"))
        if item is not None:
            item.setEnabled(available)
            item.setToolTip("" if available else "this model has no chat template (tokenizer_config.json)")
        if not available and self.chat_combo.currentData() == "chat":
            self.chat_combo.setCurrentIndex(self.chat_combo.findData("plain"))
        chat = self.is_chat()
        self.system_edit.setVisible(chat)
        self.reply_button.setVisible(chat)
        self.prompt.setPlaceholderText(CHAT_PLACEHOLDER if chat else PLAIN_PLACEHOLDER)
        if hasattr(self, "continue_button"):
            self._update_buttons()

    def _new_turns(self, before=(), message: str | None = None) -> tuple:
        """[system] + `before` + the user's turn from the prompt box."""
        from engines.text.chat import ChatTurn

        system = self.system_edit.text()
        head = (ChatTurn("system", system),) if system.strip() and not before else ()
        return (*head, *before, ChatTurn("user", self.prompt.toPlainText() if message is None else message))

    @staticmethod
    def turns_of(branch: Branch | None) -> tuple:
        """The chat turns a branch's runs render (empty: a plain branch)."""
        from engines.text.chat import turns_from_json

        seg = branch.segments[0] if branch is not None and branch.segments else None
        if seg is None or not isinstance(seg.request, dict) or not seg.request.get("turns"):
            return ()
        try:
            return turns_from_json(seg.request["turns"])
        except ChainruleError:
            return ()

    def reply_text(self, branch: Branch) -> str:
        """The assistant's reply of a chat branch: its tokens without the end-of-turn token."""
        model = work.cached_model(self._infos.get(branch.model_id))
        ids = branch.token_ids()
        if model is not None and ids:
            from engines.text.session import stop_ids

            request = TextRequest.from_json(branch.segments[0].request)
            if ids[-1] in stop_ids(model, request.end_ids(model)):
                ids = ids[:-1]
            return model.tokenizer.decode(ids)
        return self.branch_text(branch)

    def reply(self) -> Branch | None:
        """Chat: a new branch under the shown one whose turns are the shown branch's, its reply
        (as the assistant's turn) and the prompt box (the user's next turn)."""
        from engines.text.chat import ChatTurn

        src = self.store.get(self._shown)
        turns = self.turns_of(src)
        if src is None or not turns:
            return self.generate()
        info = self._branch_model(src)
        if info is None:
            return None
        if not self.prompt.toPlainText().strip():
            self._say_error("Write your next turn in the prompt box, then press Reply.")
            return None
        turns = self._new_turns((*turns, ChatTurn("assistant", self.reply_text(src))))
        request = self._request(src.model_id, "", turns=turns)
        if request is None:
            return None
        branch = self.store.add(Branch(self.store.new_id(), src.id, src.model_id, ""))
        branch.segments.append(self._segment(0, request, "generate"))
        parent_run = src.segments[-1].run_id if src.segments else None
        self._start(branch, new_branch=True, info=info, request=request, parent_run=parent_run)
        return branch

    def score_branch(self, branch: Branch | None = None) -> bool:
        """Score the branch's text on the Score page, after the prompt it continued (a chat: its turns
        rendered with the template, and the reply without its end-of-turn token); whether it started."""
        from engines.text.chat import load_chat

        branch = branch if branch is not None else self.store.get(self._shown)
        info = self._branch_model(branch) if branch is not None else None
        if info is None or not branch.tokens:
            return False
        turns = self.turns_of(branch)
        try:
            if turns:
                chat = load_chat(info.path, None)
                if chat is None:
                    raise InputError(f"{info.id} no longer has a chat template")
                prompt, text = chat.render(turns), self.reply_text(branch)
            else:
                prompt, text = branch.prompt, self.branch_text(branch)
        except ChainruleError as exc:
            self._say_error(str(exc))
            return False
        if not text:
            self._say_error("This branch has no text to score (its only token ends the turn).")
            return False
        self.select_model(branch.model_id)
        self.score.prompt.setText(prompt)
        self.score.chat_prompt = bool(turns)
        self.score.text.setPlainText(text)
        self.pages.setCurrentWidget(self.score)
        self.score.score()
        return True

    def _tokenizer(self, model_id: str):
        model = work.cached_model(self._infos.get(model_id))
        return model.tokenizer if model is not None else None

    # --- settings of a run ---------------------------------------------------------------
    def _request(self, model_id: str, prompt: str, prefix_ids=(), prefix_pick: bool = False,
                 turns=()) -> TextRequest | None:
        """The TextRequest of a run from the widgets and the tab's decoding config (seed drawn),
        or None after saying why there is none."""
        config = self.ctx.decoding_config(self.MODEL_KIND)
        if config.strategy == "beam":
            self._say_error("Beam search returns finished beams, not a token stream: see its beams on the "
                            "Compare page, or choose greedy or sample in the decoding panel.")
            return None
        try:
            return TextRequest(model=model_id, prompt="" if turns else prompt, max_new_tokens=self.max_tokens.value(),
                               stop=parse_stop_strings(self.stop_edit.text()), decoding=config,
                               prefix_ids=tuple(int(i) for i in prefix_ids), prefix_pick=prefix_pick,
                               turns=tuple(turns)).resolved()
        except ChainruleError as exc:
            self._say_error(str(exc))
            return None

    @staticmethod
    def _events(request: TextRequest, info) -> Callable:
        """The run's generator, given its cancel event."""
        return lambda cancel: work.generate_events(request, info, should_stop=cancel.is_set)

    @staticmethod
    def _segment(start: int, request: TextRequest, kind: str) -> Segment:
        config, seed = request.decoding, request.decoding.seed
        return Segment(start, seed, build_chain(config, seed).name, config.to_dict(), request.max_new_tokens,
                       tuple(request.stop), kind, request.to_json())

    def _compare_request(self):
        info = self.chosen_model()
        if info is None:
            return None
        args = (info, self.prompt.toPlainText(), self.max_tokens.value(), parse_stop_strings(self.stop_edit.text()))
        return (*args, self._new_turns()) if self.is_chat() else args

    # --- runs --------------------------------------------------------------------------
    def generate(self) -> Branch | None:
        """A new root branch from the prompt."""
        info = self.chosen_model()
        if info is not None and self.is_chat():
            request = self._request(info.id, "", turns=self._new_turns())
        else:
            request = self._request(info.id, self.prompt.toPlainText()) if info is not None else None
        if request is None:
            return None
        branch = self.store.add(Branch(self.store.new_id(), None, info.id, request.prompt))
        branch.segments.append(self._segment(0, request, "generate"))
        self._start(branch, new_branch=True, info=info, request=request, parent_run=None)
        return branch

    def continue_branch(self) -> Branch | None:
        """More tokens at the end of the shown branch (a new seed unless fixed)."""
        branch = self.store.get(self._shown)
        if branch is None:
            return self.generate()
        info = self._branch_model(branch)
        if info is None:
            return None
        if not branch.prompt_ids:
            self._say_error("This branch has not started yet: wait for its first token.")
            return None
        request = self._request(branch.model_id, branch.prompt, branch.token_ids(), turns=self.turns_of(branch))
        if request is None:
            return None
        parent_run = branch.segments[-1].run_id if branch.segments else None
        branch.segments.append(self._segment(len(branch.tokens), request, "continue"))
        branch.stopped_by = None
        self._start(branch, new_branch=False, info=info, request=request, parent_run=parent_run)
        return branch

    def regenerate(self) -> Branch | None:
        """A sibling of the shown branch from its starting point, with a fresh seed unless fixed."""
        src = self.store.get(self._shown)
        if src is None:
            return self.generate()
        info = self._branch_model(src)
        if info is None:
            return None
        tokens = list(src.tokens[: src.origin])
        request = self._request(src.model_id, src.prompt, [t.token_id for t in tokens], turns=self.turns_of(src))
        if request is None:
            return None
        branch = self.store.add(Branch(self.store.new_id(), src.parent, src.model_id, src.prompt,
                                       prompt_ids=src.prompt_ids, tokens=tokens, origin=src.origin))
        branch.segments.append(self._segment(src.origin, request, "regenerate"))
        parent = self.store.get(src.parent)
        parent_run = parent.segments[-1].run_id if parent is not None and parent.segments else None
        self._start(branch, new_branch=True, info=info, request=request, parent_run=parent_run)
        return branch

    def pick_alternative(self, index: int, token_id: int, branch_id: int | None = None) -> Branch | None:
        """A child branch: prompt + the tokens before `index` + `token_id`, then generation goes on."""
        src = self.store.get(branch_id if branch_id is not None else self._shown)
        if src is None or not 0 <= index < len(src.tokens):
            return None
        info = self._branch_model(src)
        if info is None:
            return None
        tokens = list(src.tokens[:index])
        request = self._request(src.model_id, src.prompt, [*(t.token_id for t in tokens), int(token_id)],
                                prefix_pick=True, turns=self.turns_of(src))
        if request is None:
            return None
        branch = self.store.add(Branch(self.store.new_id(), src.id, src.model_id, src.prompt,
                                       prompt_ids=src.prompt_ids, tokens=tokens, origin=index + 1))
        branch.segments.append(self._segment(index, request, "pick"))
        parent_run = src.segments[-1].run_id if src.segments else None
        self._start(branch, new_branch=True, info=info, request=request, parent_run=parent_run)
        return branch

    def _start(self, branch: Branch, *, new_branch: bool, info, request: TextRequest, parent_run: int | None) -> None:
        previous = self.store.get(self._run["branch"]) if self._run and self.runner.is_busy() else None
        if previous is not None:  # superseded: its runner callbacks will never come
            self._end_run(previous, "stopped")
        branch.state = "running"
        self._cancel = cancel = threading.Event()
        seg = branch.segments[-1]
        seg.run_id = self.ctx.record_run_started(self.MODEL_KIND, request.to_json(), parent=parent_run)
        self._run = {"branch": branch.id, "new_branch": new_branch, "n": 0, "t0": None, "t_last": None,
                     "slides": 0, "seed": seg.seed, "chain": seg.chain, "reason": None, "started": time.monotonic(),
                     "run_id": seg.run_id}
        self._notes[branch.id] = []
        if new_branch:
            self._rebuild_tree()
        self.show_branch(branch.id)
        self.pages.setCurrentIndex(0)  # the tokens page, where the run shows
        self._update_status()
        bid = branch.id
        factory = self._events(request, info)
        self._start_on_runner(lambda: factory(cancel), bid)

    def _record_end(self, branch: Branch, state: str) -> None:
        """The history row of the branch's running run: its export (with the request) and numbers.
        Recorded once (the run's id is cleared), and only for the run that is in progress."""
        run = self._run or {}
        seg = branch.segments[-1] if branch.segments else None
        run_id = run.get("run_id")
        if seg is None or run_id is None or run.get("branch") != branch.id:
            return
        run["run_id"] = None
        status = {"done": "done", "stopped": "stopped"}.get(state, "failed")
        files = {}
        if branch.tokens:
            try:
                files[f"branch-{branch.id}.json"] = json.dumps(self.export_record(branch), ensure_ascii=False,
                                                               indent=1).encode("utf-8")
            except Exception:  # noqa: BLE001 - a record that cannot be made must not break the tab
                files = {}
        new = len(branch.tokens) - seg.n_prefix
        summary = {"logprob": branch.total_logprob, "tokens": len(branch.tokens), "new_tokens": max(0, new),
                   "seed": seg.seed, "branch": branch.id, "text": first_words(self.branch_text(branch), 80)}
        if run.get("branch") == branch.id and run.get("started") is not None:
            summary["seconds"] = round(time.monotonic() - run["started"], 3)
        self.ctx.record_run_finished(run_id, files=files, summary=summary, status=status)

    def _on_events(self, bid: int, batch: list) -> None:
        branch = self.store.get(bid)
        run = self._run
        if branch is None or run is None or run["branch"] != bid:
            return  # deleted meanwhile
        new = []
        for ev in batch:
            if isinstance(ev, work.TokenStep):
                branch.tokens.append(ev.record)
                new.append(ev.record)
                run["n"] += 1
                run["t_last"] = ev.t
                if ev.record.window_slides > run["slides"]:
                    run["slides"] = ev.record.window_slides
                    self._note(bid, f"the context window slid ({run['slides']}×): older tokens are no longer seen",
                               replace_prefix="the context window slid")
            elif isinstance(ev, work.RunStarted):
                if ev.prompt_ids:
                    branch.prompt_ids = ev.prompt_ids
                run["t0"] = ev.t
                run["chain"] = ev.chain
                branch.segments[-1].chain = ev.chain
                for note in ev.notes:
                    self._note(bid, note)
            elif isinstance(ev, work.RunEnded):
                branch.stopped_by = ev.stopped_by
                run["reason"] = ev.reason
            elif isinstance(ev, work.ModelLoading):
                run["loading"] = None if ev.stage == "ready" else ev.stage
        if bid == self._shown and new:
            self.view.append_records(new)
        self._update_item(branch)
        self._update_status()

    def _on_end(self, bid: int, state: str) -> None:
        branch = self.store.get(bid)
        if branch is not None:
            self._end_run(branch, state)
        self._update_status()
        self._update_buttons()

    def _end_run(self, branch: Branch, state: str) -> None:
        run = self._run or {}
        branch.state = state
        self._record_end(branch, state)
        if run.get("branch") == branch.id and run.get("new_branch") and run.get("n", 0) == 0:
            # Nothing came: a branch with nothing of its own is no branch at all.
            self._remove(branch.id)
            return
        self._update_item(branch)

    def _on_error(self, bid: int, message: str) -> None:
        branch = self.store.get(bid)
        if branch is not None:
            run = self._run or {}
            if run.get("branch") == bid and run.get("n", 0) == 0 and not run.get("new_branch"):
                self._record_end(branch, "error")
                branch.segments.pop()  # the failed continuation added nothing
            self._end_run(branch, "error")
        self._say_error(message)  # the prompt and every branch stay as they were
        self._update_buttons()

    # --- requests and history ------------------------------------------------------------------
    def apply_request(self, request: TextRequest) -> None:
        """Restore the model, prompt, max new tokens, stop strings and decoding config of `request`,
        ready to run it again (InputError when its model is not installed)."""
        if not isinstance(request, TextRequest):
            raise InputError(f"the Text tab opens text requests, not {getattr(request, 'kind', 'other')} ones")
        if not self.select_model(request.model):
            raise InputError(f"model {request.model!r} is not installed: add its folder in the Models tab")
        self._model_changed()  # the card's defaults first, so the request's config is the one that stays
        self.prompt.setPlainText(request.prompt)
        if request.turns:  # a chat: its last user turn goes in the prompt box, a system turn in its field
            self.set_chat_mode(True)
            system = next((t.content for t in request.turns if t.role == "system"), "")
            user = next((t.content for t in reversed(request.turns) if t.role == "user"), "")
            self.system_edit.setText(system)
            self.prompt.setPlainText(user)
        self.max_tokens.setValue(request.max_new_tokens)
        self.stop_edit.setText(format_stop_strings(request.stop))
        self.ctx.set_decoding_config(request.decoding, self.MODEL_KIND)
        note = " (it continued a branch: Generate starts from the prompt)" if request.prefix_ids else ""
        self._say(f"Settings restored from a saved run{note}: press Generate to run it again.")

    def show_history_outputs(self, paths, request_json=None, summary=None) -> None:
        """A re-opened run's outputs: its branch export goes back into the tree (or is shown,
        when the tree still holds that branch)."""
        for path in paths:
            if Path(path).suffix == ".json" and Path(path).name.startswith("branch-"):
                self.open_branch_export(path)
                return

    def open_branch_export(self, path) -> Branch:
        """Show the branch a JSON export holds: the same branch of the tree when it is there,
        else a new root branch with its tokens (their alternatives are not exported). InputError
        naming the problem when the file is not a Text-tab export."""
        data = read_branch_export(path)
        try:
            return self._add_exported_branch(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{Path(path).name} is not a readable branch export ({type(exc).__name__})") from None

    def _add_exported_branch(self, data: dict[str, Any]) -> Branch:
        ids = [int(i) for i in data["token_ids"]]
        for b in self.store.all():
            if b.model_id == data["model"] and b.prompt == data["prompt"] and b.token_ids() == ids:
                self.show_branch(b.id)
                return b
        picked = set(data.get("picked") or [])
        ranks = data.get("ranks") or [None] * len(ids)
        entropies = data.get("entropies") or [None] * len(ids)
        tokens = [work.TokenRecord(tid, str(text), float(lp), None if r is None else int(r),
                                   None if e is None else float(e), picked=i in picked)
                  for i, (tid, text, lp, r, e) in enumerate(zip(ids, data["tokens"], data["logprobs"], ranks, entropies))]
        segments = [Segment(int(g["start"]), int(g["seed"]), str(g["chain"]), dict(g["settings"]),
                            int(g["max_new_tokens"]), tuple(g["stop"]), str(g["kind"]))
                    for g in data.get("segments") or []]
        if segments and isinstance(data.get("request"), dict):
            segments[-1].request = dict(data["request"])
        branch = self.store.add(Branch(self.store.new_id(), None, str(data["model"]), str(data["prompt"]),
                                       tuple(int(i) for i in data.get("prompt_ids") or ()), tokens, 0, segments,
                                       data.get("stopped_by"), "done"))
        self._rebuild_tree()
        self.show_branch(branch.id)
        return branch

    def history_state(self) -> dict[str, Any]:
        """The tab's state for the next start: the widgets and the whole branch tree (tokens with
        their log-probs and alternatives, the shown branch), under work.MAX_HISTORY_STATE_BYTES."""
        return {
            "version": HISTORY_STATE_VERSION, "model": self.model_combo.currentData(),
            "prompt": self.prompt.toPlainText()[:MAX_SAVED_PROMPT], "max_new_tokens": self.max_tokens.value(),
            "stop": self.stop_edit.text()[:1000], "shown": self._shown, "colour_mode": self.mode_combo.currentData(),
            "chat": self.chat_combo.currentData() == "chat", "system": self.system_edit.text()[:MAX_SAVED_PROMPT],
            "tree": self.store.to_state(self._shown, work.MAX_HISTORY_STATE_BYTES - MAX_SAVED_PROMPT * 8),
        }

    def restore_history_state(self, state: Any) -> None:
        """Show the state `history_state` saved. Never raises: what cannot be restored is said in
        the status line, and the tab stays usable."""
        try:
            self._restore_history_state(state)
        except Exception as exc:  # noqa: BLE001 - a saved state from another version must not break the tab
            self._say_error(f"The last session's text branches could not be restored: {exc}")

    def _restore_history_state(self, state: Any) -> None:
        if not isinstance(state, dict) or state.get("version") != HISTORY_STATE_VERSION:
            raise ValueError("it was saved by another version")
        if self.runner.is_busy():
            self.stop()
        store = work.BranchStore.from_state(state.get("tree") or {"branches": []})
        problems = []
        model = state.get("model")
        if isinstance(model, str) and not self.select_model(model):
            problems.append(f"model {model!r} is no longer installed")
        if isinstance(state.get("prompt"), str):
            self.prompt.setPlainText(state["prompt"])
        if isinstance(state.get("max_new_tokens"), int) and not isinstance(state["max_new_tokens"], bool):
            self.max_tokens.setValue(state["max_new_tokens"])
        if isinstance(state.get("stop"), str):
            self.stop_edit.setText(state["stop"])
        if state.get("colour_mode") in MODES:
            self.set_colour_mode(state["colour_mode"])
        if isinstance(state.get("system"), str):
            self.system_edit.setText(state["system"])
        if isinstance(state.get("chat"), bool):
            self.set_chat_mode(state["chat"])
        self.store, self._run, self._notes = store, None, {}
        self._shown = None
        self._rebuild_tree()
        shown = state.get("shown")
        if shown not in store and len(store):
            shown = store.all()[-1].id
        self.show_branch(shown if shown in store else None)
        gone = sorted({b.model_id for b in store.all()} - set(self._infos))
        if gone:
            problems.append(f"the branches of {', '.join(gone)} can be read but not continued (model not installed)")
        dropped = (state.get("tree") or {}).get("dropped")
        if isinstance(dropped, int) and dropped > 0:
            problems.append(f"{dropped} older branches were not kept (the saved tree is capped in size)")
        restored = f"Restored {len(store)} branch{'es' if len(store) != 1 else ''} from the last session"
        if problems:
            self._say_error(restored + "; " + "; ".join(problems) + ".")
        elif len(store):
            self._say(html.escape(restored) + ".")

    # --- branches ----------------------------------------------------------------------------
    def branch(self, branch_id: int | None) -> Branch | None:
        return self.store.get(branch_id)

    def shown_branch(self) -> Branch | None:
        return self.store.get(self._shown)

    def branch_text(self, branch: Branch) -> str:
        """The generated text of a branch (the prompt not included), cut at its stop string."""
        return branch.generated_text(self._tokenizer(branch.model_id))

    def show_branch(self, branch_id: int | None) -> None:
        branch = self.store.get(branch_id)
        self._shown = branch.id if branch else None
        if branch is None:
            self.view.clear_tokens()
            self.branch_info.setText("")
        else:
            self.view.set_content(branch.prompt, branch.tokens)
            item = self._items.get(branch.id)
            if item is not None and not item.isSelected():
                self.tree.blockSignals(True)
                self.tree.setCurrentItem(item)
                self.tree.blockSignals(False)
            self._update_branch_info(branch)
        self._update_status()
        self._update_buttons()

    def delete_branch(self, branch_id: int | None) -> None:
        """Delete one branch; its children move up to its parent (they hold their own tokens)."""
        branch = self.store.get(branch_id)
        if branch is None:
            return
        if self._run and self._run["branch"] == branch.id and self.runner.is_busy():
            self.stop()
            self._run = None
        parent = branch.parent
        self._remove(branch.id)
        self.ctx.show_message(f"Deleted branch {branch.id}")
        if self._shown is None:
            nxt = self.store.get(parent) or next(iter(self.store.all()[::-1]), None)
            self.show_branch(nxt.id if nxt else None)

    def _remove(self, branch_id: int) -> None:
        self.store.remove(branch_id)
        self._notes.pop(branch_id, None)
        if self._shown == branch_id:
            self._shown = None
            self.view.clear_tokens()
            self.branch_info.setText("")
        self._rebuild_tree()
        self._update_buttons()

    # --- the token menu ----------------------------------------------------------------------
    def alternatives_menu(self, index: int) -> QMenu | None:
        """The menu a click on token `index` of the shown branch opens: its alternatives."""
        branch = self.store.get(self._shown)
        if branch is None or not 0 <= index < len(branch.tokens):
            return None
        rec = branch.tokens[index]
        menu = QMenu(self)
        head = menu.addAction(f"Token {index + 1}: “{visible(rec.text)}”  p = {rec.probability:.4f}"
                              " — branch from here with:")
        head.setEnabled(False)
        menu.addSeparator()
        after = {tid: p for tid, _t, p in rec.top_after}
        seen = set()
        for tid, text, p in [*rec.top_before, *rec.top_after]:
            if tid in seen:
                continue
            seen.add(tid)
            before_p = next((q for i, _t, q in rec.top_before if i == tid), None)
            label = f"“{visible(text)}”   p {before_p:.4f}" if before_p is not None else f"“{visible(text)}”   p < top 10"
            if tid in after:
                label += f"  (after chain {after[tid]:.4f})"
            if tid == rec.token_id:
                label += "  ← chosen (resample after it)"
            act = QAction(label, menu)
            act.setData(tid)
            act.triggered.connect(lambda _c=False, t=tid, b=branch.id: self.pick_alternative(index, t, b))
            menu.addAction(act)
        if not seen:
            none = menu.addAction("(no alternatives recorded for this token)")
            none.setEnabled(False)
        return menu

    def _token_clicked(self, index: int, pos: QPoint) -> None:
        menu = self.alternatives_menu(index)
        if menu is not None:
            menu.exec(pos)
            menu.deleteLater()

    # --- colours -------------------------------------------------------------------------------
    def set_colour_mode(self, mode: str) -> None:
        if mode not in MODES:
            return
        i = self.mode_combo.findData(mode)
        if i != self.mode_combo.currentIndex():
            self.mode_combo.setCurrentIndex(i)  # comes back here through the signal
            return
        self.legend.set_mode(mode)
        self.view.set_mode(mode)
        self.compare.set_mode(mode)

    # --- export ----------------------------------------------------------------------------
    def export_record(self, branch: Branch) -> dict[str, Any]:
        seg0 = branch.segments[0] if branch.segments else None
        text = self.branch_text(branch)
        return {
            "model": branch.model_id,
            "prompt": branch.prompt,
            "seed": branch.seed,
            "settings": ({**seg0.settings, "max_new_tokens": seg0.max_new_tokens, "stop": list(seg0.stop_strings)}
                         if seg0 else {}),
            "segments": [{"start": s.start, "kind": s.kind, "seed": s.seed, "chain": s.chain,
                          "settings": s.settings, "max_new_tokens": s.max_new_tokens, "stop": list(s.stop_strings)}
                         for s in branch.segments],
            "text": text,
            "full_text": branch.prompt + text,
            "tokens": [t.text for t in branch.tokens],
            "token_ids": branch.token_ids(),
            "logprobs": [t.logprob for t in branch.tokens],
            "ranks": [t.rank for t in branch.tokens],
            "entropies": [t.entropy for t in branch.tokens],
            "picked": [i for i, t in enumerate(branch.tokens) if t.picked],
            "total_logprob": branch.total_logprob,
            "n": len(branch.tokens),
            "prompt_ids": list(branch.prompt_ids),
            "stopped_by": branch.stopped_by,
            "branch": branch.id,
            "parent": branch.parent,
            "notes": list(self._notes.get(branch.id, [])),
            "cli": self.cli_command(branch),  # reproduces the first run (None for a pick's branch)
            "request": self.export_request_json(branch),  # `chainrule generate --from` makes "text" again
        }

    def export_request_json(self, branch: Branch) -> dict[str, Any] | None:
        """The request that makes the branch's text (its last run's; see Branch.export_request),
        stamped with the model's fingerprint when the model is installed."""
        from engines.requests import stamp

        try:
            request = branch.export_request()
        except ChainruleError:
            return None
        if request is None:
            return None
        info = self._infos.get(branch.model_id)
        return stamp(request.to_json(), info) if info is not None else request.to_json()

    def export_text(self) -> None:
        self._export("text")

    def export_json(self) -> None:
        self._export("json")

    def _export(self, kind: str) -> None:
        branch = self.store.get(self._shown)
        if branch is None:
            self._say_error("Nothing to export: generate or select a branch first.")
            return
        suffix, filt = (".json", "JSON (*.json)") if kind == "json" else (".txt", "Text (*.txt)")
        start = str(Path(QDir.homePath()) / f"branch-{branch.id}{suffix}")
        path, _ = QFileDialog.getSaveFileName(self, f"Export branch {branch.id}", start, f"{filt};;All files (*)")
        if not path:
            return
        if kind == "json":
            data = json.dumps(self.export_record(branch), indent=2, ensure_ascii=False)
        else:
            data = branch.prompt + self.branch_text(branch)
        from engines.atomic import write_text

        self._write_export(path, lambda: write_text(path, data), f"Exported branch {branch.id}")

    # --- status ------------------------------------------------------------------------------
    def _note(self, bid: int, note: str, replace_prefix: str | None = None) -> None:
        notes = self._notes.setdefault(bid, [])
        if replace_prefix:
            notes[:] = [n for n in notes if not n.startswith(replace_prefix)]
        if note not in notes:
            notes.append(note)

    def notes(self, branch_id: int | None = None) -> list[str]:
        return list(self._notes.get(branch_id if branch_id is not None else self._shown, []))

    def _update_status(self) -> None:
        run = self._run
        branch = self.store.get(self._shown)
        parts = []
        if run is not None and branch is not None and run["branch"] == branch.id:
            parts.append(f"<b>seed {run['seed']}</b>")
            parts.append(html.escape(run["chain"]))
            parts.append(f"{run['n']} tokens")
            if run["t0"] is not None and run["t_last"] is not None and run["t_last"] > run["t0"]:
                parts.append(f"{run['n'] / (run['t_last'] - run['t0']):.1f} tokens/s")
            loading = {"start": "loading the model…", "tokenizer": "loading the model: tokenizer…",
                       "session": "loading the model: ONNX Runtime session…"}.get(run.get("loading") or "")
            state = (loading or "generating…") if branch.state == "running" else {
                "done": {"eos": "ended (end-of-text token)", "max": "ended (max new tokens)",
                         "stop string": "ended (stop string)"}.get(run["reason"] or "", "done"),
                "stopped": "stopped", "error": "failed"}.get(branch.state, branch.state)
            parts.append(state)
        elif branch is not None and branch.segments:
            seg = branch.segments[-1]
            parts.append(f"<b>seed {seg.seed}</b>")
            parts.append(html.escape(seg.chain))
            parts.append(f"{len(branch.tokens)} tokens")
        else:
            cfg = self.ctx.decoding_config("text")
            links = build_chain(cfg, cfg.seed if cfg.seed is not None else 0).links
            if cfg.seed is None and links[-1].endswith(" seed 0"):
                links[-1] = links[-1][: -len("0")] + "random"
            parts.append(f"Next run: {html.escape(' → '.join(links))} · {next_seed_text(cfg)}")
        text = " · ".join(parts)
        notes = self._notes.get(branch.id, []) if branch is not None else []
        if notes:
            text += "<br><span style='color:#92400e'>note: " + html.escape("; ".join(notes)) + "</span>"
        self._say(text)

    # --- buttons -------------------------------------------------------------------------------
    def _busy_changed(self, busy: bool) -> None:
        self._update_buttons()

    def _update_buttons(self) -> None:
        has_model = self.model_combo.currentData() is not None
        shown = self.store.get(self._shown)
        self.generate_button.setEnabled(has_model)
        self.stop_button.setEnabled(self.runner.is_busy())
        self.continue_button.setEnabled(shown is not None and bool(shown.prompt_ids))
        self.regenerate_button.setEnabled(shown is not None)
        self.reply_button.setEnabled(shown is not None and bool(self.turns_of(shown)) and shown.state != "running")
        for b in (self.delete_button, self.export_text_button, self.export_json_button):
            b.setEnabled(shown is not None)

    def _config_changed(self, config: DecodingConfig) -> None:
        fixed = config.seed is not None
        self.regenerate_button.setToolTip(
            "A sibling of the shown branch from the same start, with "
            + (f"the fixed seed {config.seed} (untick “fixed seed” for a fresh one)" if fixed else "a fresh seed"))
        if self._run is None:
            self._update_status()


@register_tab("Text", order=10)
def make_text_tab(ctx: StudioContext) -> QWidget:
    return TextTab(ctx)
