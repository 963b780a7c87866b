"""Our named prompt templates (store/templates) and the GGUF chat-template matcher.

Conformance data is Ollama's template corpus in ../shared/ollama-templates, read where it lies;
those tests skip when it is not there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from store.templates import NAMES, detect, match_template, parameters, template
from workers.template.render import check_go_template, render_go

SHARED = Path(__file__).resolve().parents[3] / "shared" / "ollama-templates"
needs_corpus = pytest.mark.skipif(not SHARED.is_dir(),
                                  reason="Ollama's template corpus is in ../shared only")

CORPUS_NAMES = ("alfred", "alpaca", "chatml", "chatqa", "codellama-70b-instruct", "command-r",
                "falcon-instruct", "gemma-instruct", "gemma3-instruct", "granite-instruct",
                "llama2-chat", "llama3-instruct", "magicoder", "mistral-instruct", "openchat",
                "phi-3", "solar-instruct", "starcoder2-instruct", "vicuna", "zephyr")
# Ollama's own test strips one trailing space from these templates' output before comparing.
TRAILING_SPACE_STRIPPED = {"chatqa", "llama2-chat", "mistral-instruct", "openchat", "vicuna"}


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


USER = [msg("user", "Hello, how are you?")]
USER_ASSISTANT_USER = USER + [msg("assistant", "I'm doing great. How can I help you today?"),
                              msg("user", "I'd like to show off how chat templating works!")]
CASES = {
    "user": USER,
    "user-assistant-user": USER_ASSISTANT_USER,
    "system-user-assistant-user": [msg("system", "You are a helpful assistant."),
                                   *USER_ASSISTANT_USER],
}


def corpus_jinja() -> list[tuple[str, str]]:
    """(expected name, Jinja template) from templates.jsonl and index.json."""
    pairs = []
    for line in (SHARED / "testdata" / "templates.jsonl").read_text().splitlines():
        if line.strip():
            pairs += list(json.loads(line).items())
    pairs += [(e["name"], e["template"]) for e in json.loads((SHARED / "index.json").read_text())]
    return pairs


def test_we_have_a_template_for_every_corpus_name() -> None:
    assert set(NAMES) == set(CORPUS_NAMES)


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_template_is_a_valid_go_template(name: str) -> None:
    check_go_template(template(name))


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_template_has_default_stop_strings(name: str) -> None:
    stop = parameters(name)["stop"]
    assert stop and all(isinstance(s, str) and s for s in stop)


def test_unknown_template_name_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        template("no-such-format")


@needs_corpus
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_template_renders_the_corpus_case_byte_for_byte(name: str, case: str) -> None:
    want = (SHARED / "testdata" / f"{name}.gotmpl" / case).read_text()
    got = render_go(template(name), CASES[case])
    if name in TRAILING_SPACE_STRIPPED:
        got = got.removesuffix(" ")
    assert got == want


@needs_corpus
def test_corpus_names_are_the_ones_we_cover() -> None:
    assert {p.name.removesuffix(".gotmpl") for p in (SHARED / "testdata").glob("*.gotmpl")} \
        == set(CORPUS_NAMES)


@needs_corpus
def test_command_r_renders_tools_and_tool_calls_as_ollama_does() -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "required": ["city"], "properties": {
            "city": {"type": "string", "description": "City"},
            "unit": {"type": "string", "enum": ["c", "f"]}}}}},
        {"type": "function", "function": {"name": "now", "description": "Time",
                                          "parameters": {"type": "object"}}}]
    history = [msg("system", "Be brief."), msg("user", "Weather in Paris?"),
               {"role": "assistant", "content": "", "tool_calls": [
                   {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
               {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
               msg("user", "Thanks")]
    ollama = (SHARED / "command-r.gotmpl").read_text()
    assert render_go(template("command-r"), history, tools=tools) == \
        render_go(ollama, history, tools=tools)


@needs_corpus
def test_matcher_maps_every_corpus_chat_template_to_its_name() -> None:
    pairs = corpus_jinja()
    assert len(pairs) >= 70
    wrong = [(name, match_template(jinja)) for name, jinja in pairs
             if name in NAMES and match_template(jinja) != name]
    assert wrong == []


def test_matcher_knows_no_template_for_an_unknown_format() -> None:
    assert match_template("{% for m in messages %}<|start_of_role|>{{ m.content }}{% endfor %}") is None


def test_matcher_knows_no_template_for_an_empty_one() -> None:
    assert match_template("") is None


def test_matcher_prefers_gemma3_when_the_template_knows_images() -> None:
    jinja = "{{ '<start_of_turn>' + role }}{% if item.type == 'image' %}<start_of_image>{% endif %}"
    assert match_template(jinja) == "gemma3-instruct"
    assert match_template("{{ '<start_of_turn>' + role + '<end_of_turn>' }}") == "gemma-instruct"


def test_matcher_tells_llama2_from_mistral_by_the_system_block() -> None:
    assert match_template("{{ '[INST] <<SYS>>\\n' + s + '\\n<</SYS>>' }}") == "llama2-chat"
    assert match_template("{{ '[INST] ' + m['content'] + ' [/INST]' }}") == "mistral-instruct"


def test_matcher_tells_alpaca_from_starcoder2_by_the_colon() -> None:
    assert match_template("{{ '### Instruction:\\n' + c }}") == "alpaca"
    assert match_template("{{ '### Instruction\\n' + c }}") == "starcoder2-instruct"


def test_detect_returns_the_template_and_its_parameters() -> None:
    found = detect("{% for m in messages %}{{ '<|im_start|>' + m['role'] }}{% endfor %}")
    assert found is not None
    assert (found.name, found.template, found.parameters) == \
        ("chatml", template("chatml"), parameters("chatml"))


def test_detect_finds_nothing_without_a_chat_template() -> None:
    assert detect(None) is None
