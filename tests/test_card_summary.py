"""The readable model-card page of the Models view (studio.card_summary)."""

import json
from pathlib import Path

from studio.card_summary import card_html

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "models"


def test_measured_results_come_with_their_command_and_unit():
    card = {"id": "m", "kind": "density", "name": "Tiny <MADE>", "parameters": 1234,
            "description": "A & B", "metrics": {
                "binarized_mnist/test": {"split": "test", "nats_per_example": 91.27706, "ensemble_k": 32,
                                         "command": "chainrule eval --model m --split test"},
                "bench/density": {"nade_speedup": 22.46, "command": "chainrule bench density --json"},
                "val_nats_per_image": 92.1},
            "data": {"name": "binarized MNIST", "train_commands": ["chainrule train made --out a",
                                                                   "chainrule train made --out a --resume"]},
            "training": {"iterations": 10, "trained_seconds": 600.0}}
    page = card_html(card)
    assert "Tiny &lt;MADE&gt;" in page and "A &amp; B" in page  # escaped, never raw HTML
    assert "1,234 parameters" in page
    assert "test 91.28 nats/image (K = 32)" in page and "incremental sampling 22.5x naive" in page
    assert page.index("Measured") < page.index("Training") < page.index("chainrule train made --out a --resume")
    assert "chainrule eval --model m --split test" in page and "chainrule bench density --json" in page
    assert "val_nats_per_image" in page and "trained minutes" in page
    assert "Nothing measured yet" not in page


def test_odd_or_broken_cards_still_render_and_say_why_they_cannot_load():
    for card in ({}, {"metrics": [1, 2]}, {"architecture": "gpt", "files": None, "metrics": {"x": {}}},
                 {"name": "n", "data": {"train_command": "chainrule train gpt"}}):
        page = card_html(card, problem="model.onnx is missing")
        assert "cannot be loaded" in page and "model.onnx is missing" in page
    assert "chainrule train gpt" in card_html({"data": {"train_command": "chainrule train gpt"}})
    assert "Nothing measured yet" in card_html({"id": "new"})


def test_every_shipped_card_renders_its_test_or_val_result():
    for folder in sorted(p for p in SHIPPED.iterdir() if (p / "card.json").is_file()):
        card = json.loads((folder / "card.json").read_text())
        page = card_html(card)
        assert card["name"] in page.replace("&#x27;", "'")
        assert "test " in page or "val " in page, folder.name
