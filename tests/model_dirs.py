"""Build model folders (card + real tiny ONNX file) in temporary directories."""

import json
from pathlib import Path

from tests.onnx_models import bigram_table, write_bigram_model


def make_model_dir(root: Path, model_id: str, kind: str = "text", **card_extra) -> Path:
    folder = root / model_id
    folder.mkdir(parents=True)
    write_bigram_model(folder / "model.onnx", bigram_table())
    card = {
        "id": model_id,
        "kind": kind,
        "files": {"decoder": "model.onnx"},
        "parameters": 36,
        "metrics": {"val_nats_per_char": 1.5},
        **card_extra,
    }
    (folder / "card.json").write_text(json.dumps(card))
    return folder
