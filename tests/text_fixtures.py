"""Variants of the committed tiny GPT-2 (tests/fixtures/tiny-gpt2-optimum), made in a temp dir.

* `padded_vocab_copy`: its tokenizer cut down so the model scores more ids than the tokenizer
  has (ids >= `keep` are gone: the padded tail, 21,528 vs 50,257 in miniature) and with holes
  (ids below `keep` missing from the id space); merges that need a removed token go too.
* `chat_copy`: a chat template (ChatML, as Qwen2 uses) in its tokenizer_config.json and an
  end-of-turn special token `<|im_end|>` (plus `<|im_start|>`) added to its tokenizer; its eos
  token stays `<|endoftext|>`, so the end of turn is found from the template's marker. The
  model's logits have 400 rows, so the added tokens get ids the model already scores: the
  tokenizer's 400 entries are cut to 398 first (ids 398 and 399 become the two markers).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
SOURCE = FIXTURES / "tiny-gpt2-optimum"
N_LOGITS = 400
PADDED_KEEP = 300  # ids 300..399 cannot be decoded
PADDED_HOLES = (199, 221)  # the model's two favourites after "ROMEO:" (and ids of single bytes)


def _cut_tokenizer(spec: dict, drop) -> dict:
    vocab = {t: i for t, i in spec["model"]["vocab"].items() if not drop(i)}
    merges = []
    for m in spec["model"]["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    spec["model"]["vocab"] = vocab
    spec["model"]["merges"] = merges
    spec["added_tokens"] = [t for t in spec["added_tokens"] if not drop(t["id"])]
    return spec


def padded_vocab_copy(root: Path, name: str = "padded-gpt2", keep: int = PADDED_KEEP,
                      holes=PADDED_HOLES) -> Path:
    folder = Path(root) / name
    shutil.copytree(SOURCE, folder)
    spec = json.loads((SOURCE / "tokenizer.json").read_text(encoding="utf-8"))
    spec = _cut_tokenizer(spec, lambda i: i >= keep or i in holes)
    (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    for extra in ("vocab.json", "merges.txt"):  # the slow tokenizer's files: not read, kept out of the way
        (folder / extra).unlink()
    return folder


CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def chat_copy(root: Path, name: str = "chat-gpt2", template: str = CHATML) -> Path:
    folder = Path(root) / name
    shutil.copytree(SOURCE, folder)
    spec = json.loads((SOURCE / "tokenizer.json").read_text(encoding="utf-8"))
    spec = _cut_tokenizer(spec, lambda i: i >= N_LOGITS - 2)
    for i, content in ((N_LOGITS - 2, "<|im_start|>"), (N_LOGITS - 1, "<|im_end|>")):
        spec["added_tokens"].append({"id": i, "content": content, "single_word": False, "lstrip": False,
                                     "rstrip": False, "normalized": False, "special": True})
    (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    cfg = json.loads((SOURCE / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    for extra in ("vocab.json", "merges.txt"):
        (folder / extra).unlink()
    return folder
