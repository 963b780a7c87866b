"""Rendering Go and Jinja prompt templates as Ollama does."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from store.templates import template
from workers.template.godata import go_json
from workers.template.render import (TemplateError, check_go_template, render_go, render_jinja,
                                      render_prompt)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "ollama-templates"


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def test_gemma_template_renders_turns_and_folds_system_into_first_user_turn() -> None:
    out = render_go(template("gemma3-instruct"), [msg("system", "Be brief."), msg("user", "Hi"),
                                                  msg("assistant", "Hello!"), msg("user", "Why?")])
    assert out == ("<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
                   "<start_of_turn>model\nHello!<end_of_turn>\n"
                   "<start_of_turn>user\nWhy?<end_of_turn>\n<start_of_turn>model\n\n")


def test_gemma_template_shows_the_system_text_only_in_a_user_turn_right_after_it() -> None:
    # As Ollama's gemma3-instruct.gotmpl ({{ if and (eq $i 1) $.System }}): a system message
    # that does not open the conversation is not shown.
    out = render_go(template("gemma3-instruct"), [msg("user", "Hi"), msg("system", "Be brief."),
                                                  msg("user", "Why?")])
    assert "Be brief." not in out


def test_legacy_template_is_cut_after_the_response() -> None:
    template = "{{ if .System }}S:{{ .System }} {{ end }}U:{{ .Prompt }} A:{{ .Response }}</s>"
    out = render_go(template, [msg("system", "sys"), msg("user", "q1"), msg("assistant", "a1"),
                               msg("user", "q2")])
    assert out == "S:sys U:q1 A:a1</s>U:q2 A:"


def test_invalid_go_template_is_reported() -> None:
    with pytest.raises(TemplateError):
        check_go_template("{{ if .Prompt }}")


def test_jinja_chat_template_renders_with_generation_prompt_and_no_double_bos() -> None:
    template = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
                "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    out = render_jinja(template, [msg("user", "hi")], bos="<s>", eos="</s>")
    assert out == "<|user|>hi<|assistant|>"


def test_jinja_raise_exception_becomes_a_template_error() -> None:
    with pytest.raises(TemplateError, match="roles must alternate"):
        render_jinja("{{ raise_exception('roles must alternate') }}", [], "", "")


@pytest.mark.skipif(not SHARED.is_dir(), reason="Ollama's template corpus is in ../shared only")
def test_ollama_template_corpus_renders_byte_for_byte() -> None:
    user = [msg("user", "Hello, how are you?")]
    uau = user + [msg("assistant", "I'm doing great. How can I help you today?"),
                  msg("user", "I'd like to show off how chat templating works!")]
    cases = {"user": user, "user-assistant-user": uau,
             "system-user-assistant-user": [msg("system", "You are a helpful assistant."), *uau]}
    checked = 0
    for source in sorted(SHARED.glob("*.gotmpl")):
        for case, messages in cases.items():
            want = (SHARED / "testdata" / source.name / case).read_text()
            got = render_go(source.read_text(), messages)
            # Ollama's own test strips one trailing space for a few templates.
            assert got == want or got.removesuffix(" ") == want.removesuffix(" "), (source, case)
            checked += 1
    assert checked >= 60
    assert json.loads((SHARED / "gemma3-instruct.json").read_text())["stop"]


# ---- Go template data and functions, as Ollama provides them -------------------------------

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather <now>",
    "parameters": {"type": "object", "required": ["city"], "additionalProperties": False,
                   "properties": {"unit": {"type": ["string", "null"], "enum": ["c", "f"]},
                                  "city": {"type": "string", "description": "City", "format": "x"}}}}}
WEATHER_JSON = ('{"type":"function","function":{"name":"get_weather","description":"Weather '
                '\\u003cnow\\u003e","parameters":{"type":"object","required":["city"],"properties":'
                '{"city":{"type":"string","description":"City"},'
                '"unit":{"type":["string","null"],"enum":["c","f"]}}}}}')
CALL = {"role": "assistant", "content": "", "tool_calls": [
    {"function": {"name": "get_weather", "arguments": {"unit": "c", "city": "Paris & Co"}}}]}


def test_a_template_calling_json_is_a_valid_template() -> None:
    check_go_template("{{ range .Messages }}{{ json .Content }}{{ end }}")


def test_json_escapes_strings_as_go_does() -> None:
    out = render_go('{{ range .Messages }}{{ json .Content }}{{ end }}{{ json .System }}',
                    [msg("system", "a<b & \"c\""), msg("user", "é\n")])
    assert out == '"a\\u003cb \\u0026 \\"c\\""' + '"é\\n"' + '"a\\u003cb \\u0026 \\"c\\""'


def test_json_of_a_missing_field_is_null() -> None:
    assert render_go("{{ json .Nothing }}{{ range .Messages }}{{ end }}", [msg("user", "x")]) == "null"


def test_go_json_writes_numbers_as_go_float64_does() -> None:
    assert go_json([1.0, 0.5, 1e21, 1e-7, 123456789.0, {"b": 1, "a": None}]) == \
        '[1,0.5,1e+21,1e-7,123456789,{"a":null,"b":1}]'


def test_slice_builtin_works_on_messages() -> None:
    template = "{{ range $i, $_ := .Messages }}{{ len (slice $.Messages $i) }}{{ end }}"
    assert render_go(template, [msg("user", "a"), msg("assistant", "b"), msg("user", "c")]) == "321"


def test_current_date_is_todays_date() -> None:
    out = render_go("{{ range .Messages }}{{ end }}{{ currentDate }}", [msg("user", "x")])
    assert out == datetime.date.today().isoformat()


def test_yesterday_date_is_the_day_before() -> None:
    out = render_go("{{ range .Messages }}{{ end }}{{ yesterdayDate }}", [msg("user", "x")])
    assert out == (datetime.date.today() - datetime.timedelta(days=1)).isoformat()


def test_tools_are_ranged_by_function_name() -> None:
    template = "{{ range .Messages }}{{ end }}{{ range .Tools }}{{ .Function.Name }}:{{ .Type }};{{ end }}"
    assert render_go(template, [msg("user", "x")], tools=[WEATHER]) == "get_weather:function;"


def test_tools_print_as_ollama_json_dropping_unknown_keys() -> None:
    template = ("{{ range .Messages }}{{ end }}"
                "{{ json .Tools }}|{{ .Tools }}|{{ range .Tools }}{{ . }}{{ end }}")
    out = render_go(template, [msg("user", "x")], tools=[WEATHER])
    assert out == f"[{WEATHER_JSON}]|[{WEATHER_JSON}]|{WEATHER_JSON}"


def test_tool_properties_range_in_name_order_with_their_types() -> None:
    template = ("{{ range .Messages }}{{ end }}{{ range .Tools }}{{ range $name, $p := "
                ".Function.Parameters.Properties }}{{ $name }}={{ $p.Type }} "
                "{{ toTypeScriptType $p }};{{ end }}{{ end }}")
    out = render_go(template, [msg("user", "x")], tools=[WEATHER])
    assert out == "city=string string;unit=[string null] string | null;"


def test_no_tools_is_false_and_prints_null() -> None:
    out = render_go("{{ range .Messages }}{{ end }}{{ if .Tools }}yes{{ end }}{{ .Tools }}",
                    [msg("user", "x")])
    assert out == "null"


def test_tool_call_arguments_print_as_json_with_sorted_keys() -> None:
    template = ("{{ range .Messages }}{{ range .ToolCalls }}{{ .Function.Name }}"
                "{{ .Function.Arguments }}{{ end }}{{ end }}")
    out = render_go(template, [msg("user", "x"), CALL])
    assert out == 'get_weather{"city":"Paris \\u0026 Co","unit":"c"}'


def test_tool_call_arguments_format_as_json_under_printf() -> None:
    template = ('{{ range .Messages }}{{ range .ToolCalls }}'
                '{{ printf "%s|%v" .Function.Arguments .Function.Arguments }}{{ end }}{{ end }}')
    out = render_go(template, [CALL])
    assert out == '{"city":"Paris \\u0026 Co","unit":"c"}|{"city":"Paris \\u0026 Co","unit":"c"}'


def test_messages_without_tool_calls_have_none() -> None:
    out = render_go("{{ range .Messages }}{{ if .ToolCalls }}calls{{ else }}none{{ end }}{{ end }}",
                    [msg("user", "x")])
    assert out == "none"


def test_tool_results_keep_their_tool_name_and_are_not_merged() -> None:
    template = "{{ range .Messages }}[{{ .Role }} {{ .ToolName }} {{ .Content }}]{{ end }}"
    out = render_go(template, [{"role": "tool", "content": "sunny", "tool_name": "weather"},
                               {"role": "tool", "content": "20C", "tool_name": "temp"}])
    assert out == "[tool weather sunny][tool temp 20C]"


def test_thinking_of_a_message_is_available() -> None:
    out = render_go("{{ range .Messages }}{{ .Thinking }}|{{ .Content }}{{ end }}",
                    [{"role": "assistant", "content": "4", "thinking": "2+2"}])
    assert out == "2+2|4"


def test_think_level_is_set_from_the_request() -> None:
    template = "{{ range .Messages }}{{ end }}{{ .Think }} {{ .ThinkLevel }} {{ .IsThinkSet }}"
    assert render_go(template, [msg("user", "x")], think="high") == "true high true"
    assert render_go(template, [msg("user", "x")], think=True) == "true medium true"
    assert render_go(template, [msg("user", "x")]) == "false  false"


def test_prompt_and_suffix_render_fill_in_the_middle() -> None:
    template = "{{ if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>{{ else }}{{ .Prompt }}{{ end }}"
    assert render_go(template, [], prompt="def f(", suffix="return x") == "<PRE> def f( <SUF>return x <MID>"


def test_legacy_template_without_response_still_shows_past_answers() -> None:
    history = [msg("user", "q1"), msg("assistant", "a1"), msg("user", "q2")]
    assert render_go("{{ .Prompt }}", history) == "q1a1q2"


def test_legacy_template_turn_being_generated_stops_at_the_response() -> None:
    template = "{{ .Prompt }}{{ if .Response }} A: {{ .Response }}{{ end }}</s>"
    out = render_go(template, [msg("user", "q1"), msg("assistant", "a1"), msg("user", "q2")])
    assert out == "q1 A: a1</s>q2"


def test_legacy_template_continues_a_trailing_assistant_message() -> None:
    template = "[INST] {{ .Prompt }} [/INST] {{ .Response }}</s>"
    out = render_go(template, [msg("user", "q"), msg("assistant", "Once upon")])
    assert out == "[INST] q [/INST] Once upon"


def test_render_budget_is_still_enforced() -> None:
    with pytest.raises(TemplateError, match="budget"):
        render_go("{{ range .Messages }}{{ end }}{{ range 100000000 }}x{{ end }}", [msg("user", "x")])


def test_template_call_without_data_is_rejected_as_ollama_does() -> None:
    with pytest.raises(TemplateError, match="undefined template"):
        check_go_template('{{ define "x" }}x{{ end }}{{ template "x" }}')


def test_jinja_template_sees_the_tools() -> None:
    template = "{% for t in tools %}{{ t['function']['name'] }}{% endfor %}"
    assert render_jinja(template, [msg("user", "hi")], "", "", tools=[WEATHER]) == "get_weather"



def test_tool_call_arguments_print_as_go_prints_the_float64s_it_decodes_json_into() -> None:
    # Ollama decodes arguments into `any`: every number a float64, which fmt prints with %g's
    # shortest form (1e+06); json writes it back as 1000000.
    calls = [{"function": {"name": "f", "arguments": {"a": 1000000, "b": 2500000.5,
                                                      "c": {"x": 1000000}, "d": 3}}}]
    template = ("{{ range .Messages }}{{ range .ToolCalls }}{{ range $k, $v := .Function.Arguments }}"
                "{{ $k }}={{ $v }};{{ end }}{{ json .Function.Arguments }}{{ end }}{{ end }}")
    assert render_go(template, [{"role": "assistant", "content": "", "tool_calls": calls}]) == (
        'a=1e+06;b=2.5000005e+06;c=map[x:1e+06];d=3;{"a":1000000,"b":2500000.5,"c":{"x":1000000},"d":3}')


def test_a_legacy_template_ending_in_a_brace_renders_it() -> None:
    # Go renders " User: hi {" (Ollama appends the .Response node to the tree, not as text).
    assert render_go("{{ .System }} User: {{ .Prompt }} {", [msg("user", "hi")]) == " User: hi {"


def test_a_model_without_a_template_gets_ollamas_default_prompt_template() -> None:
    # template.DefaultTemplate "{{ .Prompt }}", rendered as a legacy template: the last user
    # turn's messages joined by a blank line.
    messages = [msg("system", "S"), msg("user", "a"), msg("user", "b"), msg("assistant", "r"),
                msg("tool", "T"), msg("user", "c")]
    assert render_prompt("", messages) == "a\n\nbrc"


def test_fill_in_the_middle_passes_the_think_values_too() -> None:
    template = "{{ if .Think }}T{{ end }}{{ .Prompt }}|{{ .Suffix }}"
    assert render_prompt(template, [msg("user", "pre")], suffix="post", think=True) == "Tpre|post"
