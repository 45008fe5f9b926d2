"""The Text tab's branch tree: every branch of the session, its numbers and its menu.

Each branch is an item (data ROLE_BRANCH = its id) under its parent branch: its label (the
first words it generated, after the picked token for a pick's branch), its token count,
log p and seeds, a tooltip with its prompt, its runs and the `chainrule` command that
reproduces its first run (`cli_command`), and a context menu (copy that command, Continue,
Regenerate, Export, Delete). Selecting an item shows its branch.

A mixin for the Text tab, which provides store, _infos, _items, _shown, tree, branch_info,
show_branch, continue_branch, regenerate, export_text, export_json and delete_branch.
"""

from __future__ import annotations

import html
import shlex

from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QMenu, QTreeWidget, QTreeWidgetItem

from engines.errors import ChainruleError
from engines.text.request import TextRequest
from studio.text import work
from studio.text.token_view import visible
from studio.text.work import Branch

TREE_COLUMNS = ("Branch", "Tokens", "log p", "Seed")
ROLE_BRANCH = Qt.ItemDataRole.UserRole + 1


def first_words(text: str, limit: int = 28) -> str:
    words = " ".join(text.split())
    return words if len(words) <= limit else words[: limit - 1].rstrip() + "…"


class BranchTreeMixin:
    def _build_branch_tree(self) -> QTreeWidget:
        """The tree (self.tree): one column stretched for the labels, the numbers fitted."""
        self.tree = QTreeWidget()
        self.tree.setObjectName("BranchTree")
        self.tree.setColumnCount(len(TREE_COLUMNS))
        self.tree.setHeaderLabels(TREE_COLUMNS)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setUniformRowHeights(True)
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in range(1, len(TREE_COLUMNS)):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.itemSelectionChanged.connect(self._tree_selection_changed)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._tree_menu)
        return self.tree

    def _label(self, branch: Branch) -> str:
        gen = branch.tokens[branch.origin:]
        words = first_words("".join(t.text for t in gen)) or "…"
        if branch.origin == 0:  # the prompt is in the tooltip: siblings share it
            return words
        picked = branch.tokens[branch.origin - 1] if branch.origin - 1 < len(branch.tokens) else None
        pick = f"#{branch.origin} “{visible(picked.text)}”" if picked is not None else f"#{branch.origin}"
        return f"{pick} → {words}"

    def _seed_text(self, branch: Branch) -> str:
        seeds = [str(s.seed) for s in branch.segments]
        return seeds[0] + (f" +{len(seeds) - 1}" if len(seeds) > 1 else "")

    def _rebuild_tree(self) -> None:
        self.tree.blockSignals(True)
        self.tree.clear()
        self._items = {}

        def add(branch: Branch, parent_item: QTreeWidgetItem | None) -> None:
            item = QTreeWidgetItem()
            item.setData(0, ROLE_BRANCH, branch.id)
            self._items[branch.id] = item
            self._fill_item(item, branch)
            if parent_item is None:
                self.tree.addTopLevelItem(item)
            else:
                parent_item.addChild(item)
            for child in self.store.children(branch.id):
                add(child, item)

        for root in self.store.children(None):
            add(root, None)
        self.tree.expandAll()
        if self._shown in self._items:
            self.tree.setCurrentItem(self._items[self._shown])
        self.tree.blockSignals(False)

    def _fill_item(self, item: QTreeWidgetItem, branch: Branch) -> None:
        state = {"running": " ⏵", "error": " ⚠"}.get(branch.state, "")
        item.setText(0, self._label(branch) + state)
        item.setText(1, str(len(branch.tokens)))
        item.setText(2, f"{branch.total_logprob:.2f}")
        item.setText(3, self._seed_text(branch))
        for c in (1, 2, 3):
            item.setTextAlignment(c, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        segs = "<br>".join(
            f"{html.escape(s.kind)} from token {s.start + 1}: seed {s.seed} · {html.escape(s.chain)}" for s in branch.segments)
        command = self.cli_command(branch)
        turns = self.turns_of(branch)
        prompt = (f"chat: {len(turns)} turn{'s' if len(turns) != 1 else ''}, the last ({turns[-1].role}): "
                  f"{html.escape(first_words(turns[-1].content, 60) or '(empty)')}" if turns
                  else f"prompt: {html.escape(first_words(branch.prompt, 60) or '(empty)')}")
        item.setToolTip(0, f"<b>branch {branch.id}</b> · {branch.state}<br>"
                           f"{prompt}<br>{segs}"
                           + (f"<br>first run from the command line:<br><code>{html.escape(command)}</code>"
                              if command else "") + "<br><i>right-click for more</i>")

    def _update_item(self, branch: Branch) -> None:
        item = self._items.get(branch.id)
        if item is not None:
            self._fill_item(item, branch)
        if branch.id == self._shown:
            self._update_branch_info(branch)

    def _update_branch_info(self, branch: Branch) -> None:
        n = len(branch.tokens)
        self.branch_info.setText(
            f"Branch {branch.id} · {n} tokens · log p = {branch.total_logprob:.3f} nats"
            + (f" ({branch.total_logprob / n:.3f} per token)" if n else "")
            + f" · seed {self._seed_text(branch)}"
            + (f" · stopped at “{visible(branch.stopped_by)}”" if branch.stopped_by else ""))

    def _tree_selection_changed(self) -> None:
        items = self.tree.selectedItems()
        if items:
            bid = items[0].data(0, ROLE_BRANCH)
            if bid != self._shown:
                self.show_branch(bid)

    def cli_arguments(self, branch: Branch) -> list[str] | None:
        """`chainrule` arguments reproducing the branch's first run (None for a pick's branch:
        no CLI run starts from a chosen token)."""
        info = self._infos.get(branch.model_id)
        if info is None or branch.origin != 0 or not branch.segments or branch.segments[0].request is None:
            return None
        try:
            request = TextRequest.from_json(branch.segments[0].request)
        except ChainruleError:
            return None
        return work.cli_arguments(request, info)

    def cli_command(self, branch: Branch) -> str | None:
        args = self.cli_arguments(branch)
        return shlex.join(["chainrule", *args]) if args is not None else None

    def _tree_menu(self, pos: QPoint) -> None:
        item = self.tree.itemAt(pos)
        if item is None:
            return
        branch = self.store.get(item.data(0, ROLE_BRANCH))
        if branch is None:
            return
        self.show_branch(branch.id)
        menu = QMenu(self)
        command = self.cli_command(branch)
        copy = menu.addAction("Copy CLI command (reproduces its first run)")
        copy.setEnabled(command is not None)
        copy.triggered.connect(lambda: QGuiApplication.clipboard().setText(command or ""))
        menu.addSeparator()
        menu.addAction("Continue", self.continue_branch)
        menu.addAction("Regenerate", self.regenerate)
        menu.addAction("Score its text (Score page)", lambda: self.score_branch(branch))
        menu.addSeparator()
        menu.addAction("Export text…", self.export_text)
        menu.addAction("Export JSON…", self.export_json)
        menu.addSeparator()
        menu.addAction("Delete", lambda: self.delete_branch(branch.id))
        menu.exec(self.tree.viewport().mapToGlobal(pos))
        menu.deleteLater()
