"""A model card as a page a person reads: what the model is, what was measured and by which
command, how it was trained and on what, and its architecture (Qt-free HTML, shown by the
Models view next to the card's raw JSON).

Cards differ by family and by who wrote them (this project's exporters, or a foreign folder
read by the registry), so every section is optional and any value is shown as text: a card
never fails to render. Measured results come first, in their own units
(`engines.card_metrics`), each with the command that produced it, so a user can re-run it.
"""

from __future__ import annotations

import html
from typing import Any

from engines.card_metrics import bench_headline, eval_headline

MAX_VALUE_CHARS = 160  # long values (file lists, notes) are cut in tables; the JSON page has them whole


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items())
    text = str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS - 1] + "…"


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><td style='color:#4b5563; padding-right:14px'>{html.escape(str(k))}</td>"
                    f"<td>{html.escape(_text(v))}</td></tr>" for k, v in rows)
    return f"<table cellspacing='0' cellpadding='2'>{cells}</table>"


def _command(cmd: str) -> str:
    # Wrapped, not <pre>: a long command would otherwise widen the whole page.
    return (f"<p style='margin:2px 0 8px 0; white-space:pre-wrap; font-family:monospace'>"
            f"{html.escape(cmd)}</p>")


def _measured(metrics: dict) -> str:
    """Each eval and bench record: its headline, then the command that measured it; plain numbers
    (written by training) in one table after them."""
    parts, plain = [], []
    for name, value in metrics.items():
        if isinstance(value, dict):
            headline = bench_headline(value) if name.startswith("bench/") else eval_headline(name, value)
            parts.append(f"<p style='margin:6px 0 0 0'><b>{html.escape(name)}</b>"
                         f"{': ' + html.escape(headline) if headline else ''}</p>")
            detail = [(k, v) for k, v in value.items() if k not in ("command", "model")]
            parts.append(_table(detail))
            if isinstance(value.get("command"), str):
                parts.append(_command(value["command"]))
        else:
            plain.append((name, value))
    if plain:
        parts.append("<p style='margin:6px 0 0 0'><b>from training</b></p>" + _table(plain))
    return "".join(parts)


def _training(card: dict) -> str:
    data, training = card.get("data") or {}, card.get("training") or {}
    parts = []
    if isinstance(data, dict) and data:
        rows = [(k, v) for k, v in data.items() if k not in ("train_command", "train_commands")]
        parts.append(_table(rows))
        commands = data.get("train_commands") or ([data["train_command"]] if data.get("train_command") else [])
        if commands:
            parts.append("<p style='margin:6px 0 0 0'>Trained by:</p>")
            parts += [_command(str(c)) for c in commands]
    if isinstance(training, dict) and training:
        rows = [(k, v) for k, v in training.items() if not isinstance(v, dict)]
        if isinstance(training.get("trained_seconds"), (int, float)):
            rows.append(("trained minutes", round(training["trained_seconds"] / 60, 1)))
        parts.append(_table(rows))
    return "".join(parts)


def card_html(card: dict, problem: str | None = None) -> str:
    """The readable page for one card (dict as read from card.json); `problem`: why it cannot load."""
    card = card if isinstance(card, dict) else {}
    name = card.get("name") or card.get("id") or "(unnamed model)"
    head = f"<h2 style='margin:0'>{html.escape(str(name))}</h2>"
    sub = [str(card[k]) for k in ("id", "kind") if card.get(k)]
    if isinstance(card.get("parameters"), int):
        sub.append(f"{card['parameters']:,} parameters")
    parts = [head, f"<p style='color:#4b5563; margin:2px 0 8px 0'>{html.escape(' · '.join(sub))}</p>"]
    if problem:
        parts.append(f"<p style='color:#b91c1c'><b>This model cannot be loaded:</b> {html.escape(problem)}</p>")
    if card.get("description"):
        parts.append(f"<p>{html.escape(str(card['description']))}</p>")
    sections = (
        ("Measured", _measured(card["metrics"]) if isinstance(card.get("metrics"), dict) and card["metrics"] else ""),
        ("Training", _training(card)),
        ("Architecture", _table(list(card["architecture"].items()))
         if isinstance(card.get("architecture"), dict) and card["architecture"] else ""),
        ("Decoding defaults", _table(list(card["decoding_defaults"].items()))
         if isinstance(card.get("decoding_defaults"), dict) and card["decoding_defaults"] else ""),
        ("Files", _table(list(card["files"].items())) if isinstance(card.get("files"), dict) and card["files"] else ""),
    )
    for title, body in sections:
        if body:
            parts.append(f"<h3 style='margin:12px 0 4px 0'>{title}</h3>{body}")
    if not card.get("metrics"):
        parts.append("<p style='color:#4b5563'>Nothing measured yet: <code>chainrule eval --model ID --data DATA "
                     "--write-card</code> records a result here.</p>")
    return "".join(parts)
