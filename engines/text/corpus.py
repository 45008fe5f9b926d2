"""Plain-text corpora for the text models, shared by training and evaluation (no torch).

Project Gutenberg books: the text between the `*** START OF` and `*** END OF` lines, BOM
dropped, line endings normalised; each book split at the paragraph break nearest 90% of
its characters (train before, validation after).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

EOT = "<|endoftext|>"
BOM = "\ufeff"
_START = re.compile(r"^[ \t]*\*\*\*[ \t]*START OF\b([^\n]*)$", re.M)
_END = re.compile(r"^[ \t]*\*\*\*[ \t]*END OF\b", re.M)
_TITLE = re.compile(r"^\s*(?:(?:THE|THIS)\s+)?PROJECT GUTENBERG E-?BOOK\s*,?\s*(.*?)\s*\**\s*$", re.I)
_PG_TRAILER = re.compile(r"\n[ \t]*End of (?:the )?Project Gutenberg\S*\s[^\n]*\s*$", re.I)
_PG_NUMBER = re.compile(r"^pg(\d+)")


def normalise_newlines(text: str) -> str:
    """Drop a leading BOM and turn CRLF / lone CR into LF."""
    if text.startswith(BOM):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n")


def clean_book(raw: str) -> str:
    """The book text of a Project Gutenberg file (or the whole text when it has no markers).

    Keeps the lines strictly between the ``*** START OF ...`` and ``*** END OF ...`` lines
    (and drops an "End of Project Gutenberg's ..." line that older files put just before the
    end marker), then strips blank lines at both ends and any spaces ending a line.
    """
    text = normalise_newlines(raw)
    start = _START.search(text)
    if start:
        text = text[start.end():]
        end = _END.search(text)
        if end:
            text = text[:end.start()]
        text = _PG_TRAILER.sub("\n", text.rstrip())  # "End of Project Gutenberg's <title>" (older files)
    lines = [line.rstrip() for line in text.split("\n")]
    return "\n".join(lines).strip("\n") + "\n"


def book_title(raw: str) -> str | None:
    m = _START.search(normalise_newlines(raw))
    if not m:
        return None
    t = _TITLE.match(m.group(1))
    return (t.group(1) if t else m.group(1).strip(" *")) or None


def document_files(path: str | Path) -> list[Path]:
    """The ``*.txt`` files of a folder (sorted by name), or the one file given."""
    p = Path(path)
    if p.is_dir():
        # is_file() follows links and is false for FIFOs and devices: those are never opened
        files = sorted(q for q in p.iterdir() if q.is_file() and q.suffix == ".txt")
        if not files:
            raise FileNotFoundError(f"{p}: no .txt files")
        return files
    if p.is_file():
        return [p]
    raise FileNotFoundError(f"{p}: no such file or folder")


@dataclass
class Document:
    file: str
    text: str  # cleaned
    title: str | None = None
    pg_number: int | None = None
    train_text: str = ""
    val_text: str = ""

    def info(self) -> dict:
        return {"file": self.file, "title": self.title, "pg_number": self.pg_number,
                "chars": len(self.text), "train_chars": len(self.train_text),
                "val_chars": len(self.val_text)}


def split_document(text: str, train_fraction: float = 0.9) -> tuple[str, str]:
    """Cut at the paragraph break (blank line) nearest ``train_fraction`` of the characters
    (or at that exact character when the text has no paragraph break)."""
    target = int(train_fraction * len(text))
    before = text.rfind("\n\n", 0, target)
    after = text.find("\n\n", target)
    cands = [c for c in (before, after) if c > 0]
    cut = min(cands, key=lambda c: abs(c - target)) + 2 if cands else target
    return text[:cut], text[cut:]


def read_documents(path: str | Path, train_fraction: float = 0.9) -> list[Document]:
    docs = []
    for f in document_files(path):
        raw = f.read_text(encoding="utf-8")
        m = _PG_NUMBER.match(f.name)
        doc = Document(file=f.name, text=clean_book(raw), title=book_title(raw),
                       pg_number=int(m.group(1)) if m else None)
        doc.train_text, doc.val_text = split_document(doc.text, train_fraction)
        docs.append(doc)
    return docs


def gutenberg_text(folder: str | Path) -> str:
    """All cleaned books of ``folder``, each preceded by ``<|endoftext|>`` (for inspection;
    training joins documents at the id level instead)."""
    return "".join(EOT + d.text for d in read_documents(folder))
