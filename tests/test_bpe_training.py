"""Byte-level BPE GPT end to end: book cleaning, tokenizer training, a few training steps,
ONNX export with tokenizer.json, and loading + generating through the runtime (no shared data)."""

from __future__ import annotations

import json
import math
import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")

from engines.decoding.config import DecodingConfig  # noqa: E402
from engines.registry import get_model  # noqa: E402
from engines.text.model import load_text_model  # noqa: E402
from engines.text.session import plan_prompt, score_text, stream_tokens, token_text  # noqa: E402
from engines.training.bpe_data import EOT, clean_book, read_documents, split_document  # noqa: E402
from engines.training.export_gpt import export_checkpoint  # noqa: E402
from engines.training.train_gpt import train  # noqa: E402

VOCAB = 300
WORDS = ("the whale sea ship captain harbour morning evening letter garden window sister "
         "mother said looked went came would could little great young old dark cold house "
         "café naïve").split()
SENTENCE = "The captain looked at the sea and said that the whale would come."


def _made_up_book(seed: int, n_sentences: int) -> str:
    rng = random.Random(seed)
    paras = []
    for _ in range(n_sentences // 5):
        sents = []
        for _ in range(5):
            words = [rng.choice(WORDS) for _ in range(rng.randint(5, 12))]
            sents.append(" ".join(words).capitalize() + rng.choice([".", ".", "!", "?"]))
        paras.append(" “" + " ".join(sents) + "”")
    return SENTENCE + "\n\n" + "\n\n".join(paras) + "\n"


def _gutenberg_file(title: str, body: str, crlf: bool) -> bytes:
    text = (f"The Project Gutenberg eBook of {title}\n\nLicence header.\n\n"
            f"*** START OF THE PROJECT GUTENBERG EBOOK {title.upper()} ***\n\n{body}\n\n"
            f"*** END OF THE PROJECT GUTENBERG EBOOK {title.upper()} ***\n\nLicence footer.\n")
    if crlf:
        text = text.replace("\n", "\r\n")
    return ("\ufeff" + text).encode("utf-8")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("bpe")
    books = root / "books"
    books.mkdir()
    (books / "pg1_first_book.txt").write_bytes(_gutenberg_file("First Book", _made_up_book(1, 60), crlf=True))
    (books / "pg2_second_book.txt").write_bytes(_gutenberg_file("Second Book", _made_up_book(2, 40), crlf=False))
    run = root / "run"
    summary = train(books, run, tokenizer="bpe", vocab_size=VOCAB, n_layer=1, n_head=2, n_embd=32,
                    block_size=32, batch_size=8, max_iters=6, eval_interval=3, eval_iters=2,
                    warmup_iters=2, lr=3e-3, threads=1, command="python -m engines.training.train_gpt test")
    models = root / "models"
    card = export_checkpoint(summary["ckpt"], models / "tiny-bpe", export_command="export test")
    return books, run, models, card


def test_clean_book_keeps_only_the_body():
    raw = _gutenberg_file("A Title", "Line one.\n\nLine two.  ", crlf=True).decode("utf-8")
    assert clean_book(raw) == "Line one.\n\nLine two.\n"
    assert clean_book("\ufeffno markers\r\nhere") == "no markers\nhere\n"
    train, val = split_document("a" * 80 + "\n\n" + "b" * 20, 0.9)
    assert (train, val) == ("a" * 80 + "\n\n", "b" * 20)


def test_documents_are_split_each(trained):
    books, _, _, _ = trained
    docs = read_documents(books)
    assert [d.title for d in docs] == ["FIRST BOOK", "SECOND BOOK"] and [d.pg_number for d in docs] == [1, 2]
    for d in docs:
        assert d.text.startswith(SENTENCE) and "Licence" not in d.text and "\r" not in d.text
        assert d.train_text + d.val_text == d.text and 0.8 < len(d.train_text) / len(d.text) < 0.97


def test_run_dir_log_and_checkpoint(trained):
    _, run, _, _ = trained
    spec = json.loads((run / "tokenizer.json").read_text(encoding="utf-8"))
    assert spec["added_tokens"][0]["content"] == EOT and spec["added_tokens"][0]["id"] == 0
    assert "ByteLevel" in json.dumps(spec["pre_tokenizer"]) and "ByteLevel" in json.dumps(spec["decoder"])
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    start, evals = log[0], [r for r in log if r["event"] == "eval"]
    assert start["tokenizer"] == "bpe" and start["val_chars_per_token"] > 1.5
    assert len(evals) == 2
    for r in evals:
        assert math.isclose(r["val_bpc"], r["val_loss"] / math.log(2) / start["val_chars_per_token"], rel_tol=1e-2)
    ck = torch.load(run / "ckpt.pt", map_location="cpu", weights_only=False)
    assert ck["tokenizer"]["type"] == "bpe" and ck["tokenizer"]["file"] == "tokenizer.json"
    assert ck["tokenizer"]["json"] == (run / "tokenizer.json").read_text(encoding="utf-8")
    assert ck["config"]["vocab_size"] == ck["tokenizer"]["vocab_size"] <= VOCAB


def test_card(trained):
    _, run, models, card = trained
    first_run = (run / "log.jsonl").read_text().split('"event": "end"')[0].splitlines()
    best = min((json.loads(line) for line in first_run if '"eval"' in line), key=lambda r: r["val_loss"])
    assert math.isclose(card["training"]["best_val_bits_per_char_estimate"], best["val_bpc"], rel_tol=1e-3)
    assert card["name"] == "Gutenberg BPE GPT" and "two Project Gutenberg books" in card["description"]
    assert card["kind"] == "text" and card["files"] == {"decoder": "model.onnx", "tokenizer": "tokenizer.json"}
    assert card["tokenizer"]["type"] == "hf" and card["tokenizer"]["start_token"] == EOT
    assert card["data"]["export_command"] == "export test"
    assert [d["pg_number"] for d in card["data"]["documents"]] == [1, 2]
    assert card["data"]["documents"][0]["url"] == "https://www.gutenberg.org/ebooks/1"
    assert json.loads((models / "tiny-bpe" / "card.json").read_text(encoding="utf-8")) == card
    assert sorted(p.name for p in (models / "tiny-bpe").iterdir()) == ["card.json", "model.onnx", "tokenizer.json"]


def test_runtime_loads_generates_and_decodes_multichar_tokens(trained):
    _, run, models, _ = trained
    model = load_text_model(get_model("tiny-bpe", [models]))
    tk = model.tokenizer
    assert tk.vocab_size <= VOCAB and tk.start_id == 0 and tk.eos_id == 0 and tk.start_text == EOT

    # the runtime tokenizer is the training one, with merges: fewer tokens than characters
    from tokenizers import Tokenizer

    ref = Tokenizer.from_file(str(run / "tokenizer.json"))
    for text in (SENTENCE, "A naïve “café” sister.\nNew line  two spaces"):
        ids = tk.encode(text)
        assert ids == ref.encode(text, add_special_tokens=False).ids
        assert tk.decode(ids) == text
        assert b"".join(tk.token_bytes(i) for i in ids).decode("utf-8") == text
    ids = tk.encode(SENTENCE)
    assert len(ids) < len(SENTENCE) and any(len(token_text(model, i)) > 1 for i in ids)
    assert "".join(token_text(model, i) for i in ids) == SENTENCE

    plan = plan_prompt(model, "", 40)
    assert plan.ids == [0]
    events = list(stream_tokens(model, plan.ids, DecodingConfig(strategy="sample", temperature=1.0), 40, seed=3))
    assert 1 <= len(events) <= 40 and all(math.isfinite(e.logprob) and e.logprob <= 0 for e in events)
    assert all(0 <= e.token_id < tk.vocab_size for e in events)
    text = tk.decode([e.token_id for e in events if e.token_id != tk.eos_id])
    assert isinstance(text, str)

    scored = score_text(model, SENTENCE)
    assert len(scored.token_ids) == len(ids) and math.isfinite(scored.bits_per_char)


def test_resume_keeps_the_tokenizer(trained):
    books, run, _, _ = trained
    before = (run / "tokenizer.json").read_bytes()
    summary = train(books, run, tokenizer="bpe", vocab_size=VOCAB + 50, n_layer=1, n_head=2, n_embd=32,
                    block_size=32, batch_size=8, max_iters=8, eval_interval=3, eval_iters=2,
                    warmup_iters=2, threads=1, resume=True, command="resume test")
    assert summary["stopped"] == "max_iters" and summary["iters"] == 8
    assert (run / "tokenizer.json").read_bytes() == before
    with pytest.raises(ValueError, match="bpe tokenizer"):
        train(books / "pg1_first_book.txt", run, tokenizer="char", resume=True, threads=1)
