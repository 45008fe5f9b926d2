"""Chat (engines/text/chat.py): templates render as transformers renders them, in a sandbox; a chat
request round-trips through JSON, the CLI (`--user`, `--chat FILE`, `--from`) and the Text tab, and
its reply ends at the end-of-turn token and is a branch like any other."""

import json

import pytest

from engines.decoding.config import DecodingConfig
from engines.errors import InputError, ModelLoadError
from engines.registry import get_model
from engines.requests import request_from_json
from engines.text.chat import ChatTemplate, ChatTurn, chat_of, has_chat_template, load_chat
from engines.text.model import load_text_model
from engines.text.request import TextDone, TextRequest, TextStarted, run
from engines.text.session import beam_generate, plan_prompt, score_text, stream_tokens
from tests.cli_helpers import error_line, run_cli
from tests.tab_helpers import new_window, set_config
from tests.text_fixtures import CHATML, FIXTURES, chat_copy

pytestmark = pytest.mark.usefixtures("isolated_user_models")
IM_START, IM_END = 398, 399  # the chat fixture's added special tokens (tests/text_fixtures.py)
SEED = 5  # at temperature 3 this seed's reply draws <|im_end|> after a few tokens (asserted below)
HOT = DecodingConfig(temperature=3, seed=SEED)

# Templates of real families, copied from their tokenizer_config.json (Qwen2-Instruct, Meta-Llama-3-Instruct,
# Phi-3-mini-instruct, Mistral-7B-Instruct-v0.1); QWEN25 is Qwen2.5's layout without its tool branch; CUSTOM
# exercises trim_blocks / lstrip_blocks, loop controls, tojson of non-ASCII text and the generation tag.
QWEN2 = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
QWEN25 = '{%- if messages[0][\'role\'] == \'system\' %}\n    {{- \'<|im_start|>system\\n\' + messages[0][\'content\'] + \'<|im_end|>\\n\' }}\n{%- else %}\n    {{- \'<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n\' }}\n{%- endif %}\n{%- for message in messages %}\n    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant") %}\n        {{- \'<|im_start|>\' + message.role + \'\\n\' + message.content + \'<|im_end|>\' + \'\\n\' }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- \'<|im_start|>assistant\\n\' }}\n{%- endif %}\n'
LLAMA3 = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
PHI3 = "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
MISTRAL = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
CUSTOM = "{{ messages[0] | tojson }}\n{% for m in messages %}\n    {% if m.role == 'system' %}{% continue %}{% endif %}\n  [{{ m.role }}] {{ m | tojson }}\n    {% generation %}{{ m.content | length }}{% endgeneration %}\n\n{% endfor %}\n{% if add_generation_prompt %}\n>>> {{ eos_token }}\n{% endif %}"
SPECIALS = {'QWEN2': {'eos_token': '<|im_end|>'}, 'QWEN25': {'eos_token': '<|im_end|>'}, 'LLAMA3': {'bos_token': '<|begin_of_text|>', 'eos_token': '<|eot_id|>'}, 'PHI3': {'bos_token': '<s>', 'eos_token': '<|endoftext|>'}, 'MISTRAL': {'bos_token': '<s>', 'eos_token': '</s>'}, 'CUSTOM': {'eos_token': '<|im_end|>'}}
TURNS = [{'role': 'system', 'content': 'Be brief. Ünïcödé ✓ "quoted"'}, {'role': 'user', 'content': '  Hello there  \n'}, {'role': 'assistant', 'content': 'Hi! How can I help?'}, {'role': 'user', 'content': 'Name a prime.'}]
# Expected renders: computed once in /work/venv-hf with
# transformers 4.57.6, jinja2 3.1.6:
#   AutoTokenizer.from_pretrained('tests/fixtures/tiny-gpt2-optimum').apply_chat_template(
#       turns, chat_template=T, tokenize=False, add_generation_prompt=G, **SPECIALS[name])
# (Mistral without the system turn, which its template refuses) and pasted here as literals.
EXPECTED = {
    ('QWEN2', True): '<|im_start|>system\nBe brief. Ünïcödé ✓ "quoted"<|im_end|>\n<|im_start|>user\n  Hello there  \n<|im_end|>\n<|im_start|>assistant\nHi! How can I help?<|im_end|>\n<|im_start|>user\nName a prime.<|im_end|>\n<|im_start|>assistant\n',
    ('QWEN2', False): '<|im_start|>system\nBe brief. Ünïcödé ✓ "quoted"<|im_end|>\n<|im_start|>user\n  Hello there  \n<|im_end|>\n<|im_start|>assistant\nHi! How can I help?<|im_end|>\n<|im_start|>user\nName a prime.<|im_end|>\n',
    ('QWEN25', True): '<|im_start|>system\nBe brief. Ünïcödé ✓ "quoted"<|im_end|>\n<|im_start|>user\n  Hello there  \n<|im_end|>\n<|im_start|>assistant\nHi! How can I help?<|im_end|>\n<|im_start|>user\nName a prime.<|im_end|>\n<|im_start|>assistant\n',
    ('QWEN25', False): '<|im_start|>system\nBe brief. Ünïcödé ✓ "quoted"<|im_end|>\n<|im_start|>user\n  Hello there  \n<|im_end|>\n<|im_start|>assistant\nHi! How can I help?<|im_end|>\n<|im_start|>user\nName a prime.<|im_end|>\n',
    ('LLAMA3', True): '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief. Ünïcödé ✓ "quoted"<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nName a prime.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
    ('LLAMA3', False): '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief. Ünïcödé ✓ "quoted"<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nName a prime.<|eot_id|>',
    ('PHI3', True): '<|system|>\nBe brief. Ünïcödé ✓ "quoted"<|end|>\n<|user|>\n  Hello there  \n<|end|>\n<|assistant|>\nHi! How can I help?<|end|>\n<|user|>\nName a prime.<|end|>\n<|assistant|>\n',
    ('PHI3', False): '<|system|>\nBe brief. Ünïcödé ✓ "quoted"<|end|>\n<|user|>\n  Hello there  \n<|end|>\n<|assistant|>\nHi! How can I help?<|end|>\n<|user|>\nName a prime.<|end|>\n<|endoftext|>',
    ('MISTRAL', True): '<s>[INST]   Hello there  \n [/INST]Hi! How can I help?</s> [INST] Name a prime. [/INST]',
    ('MISTRAL', False): '<s>[INST]   Hello there  \n [/INST]Hi! How can I help?</s> [INST] Name a prime. [/INST]',
    ('CUSTOM', True): '{"role": "system", "content": "Be brief. Ünïcödé ✓ \\"quoted\\""}\n  [user] {"role": "user", "content": "  Hello there  \\n"}\n16\n  [assistant] {"role": "assistant", "content": "Hi! How can I help?"}\n19\n  [user] {"role": "user", "content": "Name a prime."}\n13\n>>> <|im_end|>\n',
    ('CUSTOM', False): '{"role": "system", "content": "Be brief. Ünïcödé ✓ \\"quoted\\""}\n  [user] {"role": "user", "content": "  Hello there  \\n"}\n16\n  [assistant] {"role": "assistant", "content": "Hi! How can I help?"}\n19\n  [user] {"role": "user", "content": "Name a prime."}\n13\n',
}
MISTRAL_ERROR = 'Conversation roles must alternate user/assistant/user/assistant/...'


@pytest.mark.parametrize("name", list(SPECIALS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_family_templates_render_exactly_as_transformers(name, add_generation_prompt):
    turns = [ChatTurn(**t) for t in (TURNS[1:] if name == "MISTRAL" else TURNS)]
    template = ChatTemplate(globals()[name], SPECIALS[name])
    assert template.render(turns, add_generation_prompt) == EXPECTED[(name, add_generation_prompt)]


def test_template_errors_are_one_line_and_escapes_are_refused():
    with pytest.raises(InputError) as err:
        ChatTemplate(MISTRAL, SPECIALS["MISTRAL"]).render([ChatTurn(**t) for t in TURNS])
    assert MISTRAL_ERROR in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ModelLoadError, match="cannot be compiled") as err:
        ChatTemplate("{% if %}\n{% endif %}")
    assert "\n" not in str(err.value)
    user = [ChatTurn("user", "hi")]
    for evil in ("{{ ''.__class__.__mro__[1].__subclasses__() }}",
                 "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
                 "{{ messages.append({'role': 'system', 'content': 'x'}) }}",
                 "{{ (messages | first).update({'content': 'x'}) }}",
                 "{{ 'a' * 10**10 }}", "{{ [0] * 100000000 }}"):
        with pytest.raises(InputError, match="unsafe and was refused by its sandbox") as err:
            ChatTemplate(evil).render(user)
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="failed"):  # a template's own bug
        ChatTemplate("{{ messages[0]['content'] + 1 }}").render(user)


def test_turns_are_checked():
    with pytest.raises(InputError, match="role = 'robot'"):
        ChatTurn("robot", "x")
    with pytest.raises(InputError, match="exactly"):
        TextRequest(model="m", turns=[{"role": "user", "content": "x", "extra": 1}])
    with pytest.raises(InputError, match="either a prompt or chat turns"):
        TextRequest(model="m", prompt="hi", turns=[{"role": "user", "content": "x"}])
    with pytest.raises(InputError, match="expected a list"):
        TextRequest.from_json({**TextRequest(model="m").to_json(), "turns": "hi"})


# --- a model with a chat template ------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-models")
    chat_copy(root)
    return root


@pytest.fixture(scope="module")
def chat_model(models):
    return load_text_model(get_model("chat-gpt2", [models]))


def test_the_chat_of_a_folder_finds_its_end_of_turn_token(models, chat_model, tmp_path):
    chat = chat_of(chat_model)
    assert IM_END in chat.end_ids and chat_model.tokenizer.eos_id in chat.end_ids
    assert "<|im_end|>" in chat.end_tokens
    assert has_chat_template(models / "chat-gpt2") and not has_chat_template(FIXTURES / "tiny-gpt2-optimum")
    assert load_chat(FIXTURES / "tiny-gpt2-optimum", chat_model.tokenizer) is None
    # newer transformers save the template beside the config; the list form names a default
    folder = chat_copy(tmp_path, "jinja-file", template="{{ 'from config' }}")
    (folder / "chat_template.jinja").write_text(CHATML, encoding="utf-8")
    assert load_chat(folder, chat_model.tokenizer).render([ChatTurn("user", "x")]).endswith("<|im_start|>assistant\n")
    folder = chat_copy(tmp_path, "listed", template=[{"name": "tool_use", "template": "{{ 'tools' }}"},
                                                     {"name": "default", "template": "{{ 'default' }}"}])
    assert load_chat(folder, chat_model.tokenizer).render([ChatTurn("user", "x")]) == "default"


def test_a_chat_reply_stops_at_the_end_of_turn_token(chat_model):
    turns = (ChatTurn("system", "Be brief."), ChatTurn("user", "Hello"))
    req = TextRequest(model="chat-gpt2", turns=turns, max_new_tokens=120, decoding=HOT)
    events = list(run(req, model=chat_model))
    started, done = events[0], events[-1]
    assert isinstance(started, TextStarted) and isinstance(done, TextDone)
    rendered = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
                "<|im_start|>assistant\n")
    assert started.prompt_ids == tuple(chat_model.tokenizer.encode(rendered))
    assert started.prompt_ids[0] == IM_START and started.prompt_ids.count(IM_END) == 2  # special tokens, whole
    assert any("chat: 2 turns" in n and "<|im_end|>" in n for n in started.notes)
    sample = done.samples[0]
    assert sample.token_ids[-1] == IM_END and IM_END not in sample.token_ids[:-1]
    assert sample.stopped_by == "eos" and len(sample.token_ids) < 120
    # the same text as a plain prompt draws the same tokens, and does not stop there
    plain = list(stream_tokens(chat_model, plan_prompt(chat_model, rendered, 120).ids, HOT, len(sample.token_ids) + 5,
                               seed=SEED, n_alternatives=0))
    assert [e.token_id for e in plain[:len(sample.token_ids)]] == list(sample.token_ids)
    assert len(plain) == len(sample.token_ids) + 5
    # every token of the reply is inspectable as in plain mode
    tokens = [e.token for e in events if hasattr(e, "token")]
    assert all(t.top_before and t.rank is not None for t in tokens)
    # beam search ends its hypotheses at the end-of-turn token too
    beams = beam_generate(chat_model, started.prompt_ids, DecodingConfig(strategy="beam", num_beams=3), 40,
                          end_ids=chat_of(chat_model).end_ids)
    assert all(IM_END not in b.token_ids[:-1] for b in beams)


def test_a_rendered_chat_gets_no_added_bos(tmp_path):
    """As apply_chat_template(tokenize=True): the template writes any BOS itself (Llama-3's bos_token),
    so a tokenizer that adds BOS to plain prompts (add_bos_token) adds none to a chat."""
    folder = chat_copy(tmp_path, "bos-chat", template="{{ bos_token }}" + CHATML)
    cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    (folder / "tokenizer_config.json").write_text(json.dumps({**cfg, "add_bos_token": True}), encoding="utf-8")
    model = load_text_model(get_model("bos-chat", [tmp_path]))
    bos = model.tokenizer.encode("<|endoftext|>")
    assert plan_prompt(model, "Hi", 4).ids[:1] == bos  # a plain prompt gets its BOS
    started = next(run(TextRequest(model="bos-chat", turns=[{"role": "user", "content": "Hi"}], max_new_tokens=4),
                       model=model))
    assert started.prompt_ids[:2] == (*bos, IM_START)  # the template's one BOS, none added
    rendered = "<|endoftext|><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert started.prompt_ids == tuple(model.tokenizer.encode(rendered))


def test_a_chat_request_round_trips_through_json_the_cli_and_from(models, chat_model, capsys, tmp_path):
    turns = (ChatTurn("system", "Be brief."), ChatTurn("user", "Hello"))
    req = TextRequest(model="chat-gpt2", turns=turns, max_new_tokens=120, decoding=HOT)
    data = json.loads(json.dumps(req.to_json()))
    assert data["turns"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    assert TextRequest.from_json(data) == req == request_from_json(data)
    assert json.dumps(TextRequest.from_json(data).to_json()) == json.dumps(req.to_json())
    expected = list(run(req, model=chat_model))[-1].samples[0]

    argv = req.to_command()
    assert argv[argv.index("--system") + 1] == "Be brief." and argv[argv.index("--user") + 1] == "Hello"
    out, _ = run_cli(capsys, str(models), *argv, "--out", str(tmp_path / "a.json"))
    assert out["samples"][0]["token_ids"] == list(expected.token_ids)
    assert out["samples"][0]["text"] == expected.text
    again, _ = run_cli(capsys, str(models), "generate", "--from", str(tmp_path / "a.json"), "--out",
                       str(tmp_path / "b.json"))
    assert again["samples"][0]["token_ids"] == list(expected.token_ids)

    chat_file = tmp_path / "chat.json"
    chat_file.write_text(json.dumps([t.to_json() for t in turns]), encoding="utf-8")
    out, _ = run_cli(capsys, str(models), "generate", "text", "--model", "chat-gpt2", "--chat", str(chat_file),
                     "--temperature", "3", "--seed", str(SEED), "--max-new-tokens", "120")
    assert out["samples"][0]["token_ids"] == list(expected.token_ids)

    longer = req.replace(turns=(*turns, ChatTurn("assistant", "Hi."), ChatTurn("user", "More?")))
    with pytest.raises(InputError, match="--from"):
        longer.to_command()
    assert "--prompt does not go with a chat" in error_line(
        capsys, str(models), "generate", "text", "--model", "chat-gpt2", "--user", "x", "--prompt", "y")
    assert "no chat template" in error_line(
        capsys, str(FIXTURES), "generate", "text", "--model", "tiny-gpt2-optimum", "--user", "x")
    bad = tmp_path / "bad.json"
    bad.write_text("[{\"role\": \"user\"", encoding="utf-8")
    assert "is not valid JSON" in error_line(
        capsys, str(models), "generate", "text", "--model", "chat-gpt2", "--chat", str(bad))
    bad.write_text(json.dumps({"turns": [{"role": "bot", "content": "x"}]}), encoding="utf-8")
    assert "role = 'bot' is invalid" in error_line(
        capsys, str(models), "generate", "text", "--model", "chat-gpt2", "--chat", str(bad))
    assert "--system needs --user" in error_line(
        capsys, str(models), "generate", "text", "--model", "chat-gpt2", "--system", "x")


# --- the Text tab ------------------------------------------------------------------------------------


@pytest.fixture
def window(qtbot, models):
    w = new_window(qtbot, models, FIXTURES)
    yield w
    w.close()


def wait_run(qtbot, tab, action):
    result = action()
    qtbot.waitUntil(lambda: not tab.is_running(), timeout=10_000)
    return result


def test_the_text_tab_chats_and_the_reply_is_a_branch(window, qtbot, chat_model):
    tab = window.tab("Text")
    assert tab.select_model("tiny-gpt2-optimum")
    assert not tab.set_chat_mode(True)  # no template: Chat is not offered
    assert tab.select_model("chat-gpt2")
    assert tab.set_chat_mode(True) and tab.system_edit.isVisibleTo(tab) and tab.reply_button.isVisibleTo(tab)
    set_config(window, temperature=3, seed=SEED)
    tab.system_edit.setText("Be brief.")
    tab.prompt.setPlainText("Hello")
    tab.max_tokens.setValue(120)
    branch = wait_run(qtbot, tab, tab.generate)

    expected = list(run(TextRequest(model="chat-gpt2", turns=(ChatTurn("system", "Be brief."), ChatTurn("user", "Hello")),
                                    max_new_tokens=120, decoding=HOT), model=chat_model))[-1].samples[0]
    assert branch.token_ids() == list(expected.token_ids) and branch.token_ids()[-1] == IM_END
    assert branch.state == "done" and tab._run["reason"] == "eos"
    assert "ended (end-of-text token)" in tab.status_text() and "chat: 2 turns" in tab.status_text()
    assert all(t.top_before for t in branch.tokens)  # inspectable
    request = TextRequest.from_json(branch.segments[0].request)
    assert [t.role for t in request.turns] == ["system", "user"] and request.prompt == ""

    # scorable: the Score page scores the reply after the rendered turns
    assert tab.score_branch(branch)
    qtbot.waitUntil(lambda: tab.score.result is not None and not tab.score.runner.is_busy(), timeout=10_000)
    reply = chat_model.tokenizer.decode(branch.token_ids()[:-1])
    rendered = chat_of(chat_model).render(request.turns)
    assert tab.score.prompt.text() == rendered and tab.score.text.toPlainText() == reply
    assert tab.score.result.total_logprob == pytest.approx(score_text(chat_model, reply, rendered, chat=True).total_logprob)

    # Compare runs the chat too: its "current" column is the same reply
    tab.compare.run_button.click()
    qtbot.waitUntil(lambda: not tab.compare.runner.is_busy(), timeout=10_000)
    assert [r.token_id for r in tab.compare.column("current").view.records()] == branch.token_ids()
    assert all(TextRequest.from_json(r.to_json()).turns == request.turns for r in tab.compare._requests)

    # a pick branches inside the reply and keeps the chat
    child = wait_run(qtbot, tab, lambda: tab.pick_alternative(0, branch.tokens[0].top_before[1][0]))
    child_request = TextRequest.from_json(child.segments[-1].request)
    assert child_request.turns == request.turns and child_request.prefix_ids[0] == branch.tokens[0].top_before[1][0]
    assert child.parent == branch.id and child.tokens[0].picked

    # Reply: the shown reply and the next user turn continue the conversation
    tab.show_branch(branch.id)
    tab.prompt.setPlainText("And then?")
    follow = wait_run(qtbot, tab, tab.reply)
    turns = TextRequest.from_json(follow.segments[0].request).turns
    assert [t.role for t in turns] == ["system", "user", "assistant", "user"]
    assert turns[2].content == chat_model.tokenizer.decode(branch.token_ids()[:-1]) and turns[3].content == "And then?"
    assert follow.parent == branch.id

    # the branch says it is a chat; the tab's state (mode, system turn, tree) survives a restart
    assert "chat: 2 turns, the last (user): Hello" in tab._items[branch.id].toolTip(0)
    state = json.loads(json.dumps(tab.history_state()))
    tab.set_chat_mode(False)
    tab.system_edit.setText("")
    tab.restore_history_state(state)
    assert tab.is_chat() and tab.system_edit.text() == "Be brief." and tab.turns_of(tab.branch(branch.id)) == request.turns

    # the JSON export re-runs with `generate --from`; apply_request restores chat mode
    exported = tab.export_record(branch)["request"]
    assert exported["turns"] == [t.to_json() for t in request.turns]
    tab.set_chat_mode(False)
    tab.apply_request(request)
    assert tab.is_chat() and tab.system_edit.text() == "Be brief." and tab.prompt.toPlainText() == "Hello"
