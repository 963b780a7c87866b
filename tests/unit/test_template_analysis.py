"""What a chat template tells about its model: thinking tags and the tool-call tag, inferred
as Ollama infers them."""

from __future__ import annotations

from store.templates import template
from tests.unit.test_toolcalls import JSON, LIST, MISTRAL, QWEN
from workers.template.analysis import analyze


def thinking_tags(source: str) -> tuple[str, str]:
    return analyze(source).thinking_tags


def supports_thinking(source: str) -> bool:
    return analyze(source).thinking


def tool_call_tag(source: str) -> str:
    return analyze(source).tool_call_tag


QWEN3 = """
{{- if or .System .Tools .Thinking }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}
<tools>
{{- range .Tools }}
{"type": "function", "function": {{ json .Function }}}
{{- end }}
</tools>
{{- end }}
{{- if .Thinking }}
/think
{{- else }}
/no_think
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if and $last .Thinking }}
<think>{{ .Thinking }}</think>
{{ end }}
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}
"""
GEMMA3 = template("gemma3-instruct")


def test_tags_come_from_the_text_around_thinking_in_the_messages_loop() -> None:
    assert thinking_tags(QWEN3) == ("<think>", "</think>")


def test_inferred_tags_are_trimmed_of_surrounding_whitespace() -> None:
    template = ("{{- range .Messages }}{{ if .Thinking }}\n  [BEGIN]  {{ .Thinking }}  [END]\n"
                "{{ end }}{{ end }}")
    assert thinking_tags(template) == ("[BEGIN]", "[END]")


def test_thinking_outside_a_range_over_messages_gives_no_tags() -> None:
    template = ("{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
                "{{ range $i, $_ := .Messages }}{{ range .Parts }}"
                "<think>{{ .Thinking }}</think>{{ end }}{{ end }}")
    assert thinking_tags(template) == ("", "")


def test_template_that_is_not_go_syntax_gives_no_tags() -> None:
    assert thinking_tags("{% for m in messages %}<think>{{ m.thinking }}</think>{% endfor %}") == ("", "")


def test_thinking_capability_needs_both_tags_not_just_a_think_variable() -> None:
    assert supports_thinking(QWEN3)
    assert not supports_thinking("{{ if .Think }}/think{{ end }}{{ range .Messages }}{{ .Content }}{{ end }}")
    assert not supports_thinking(GEMMA3)
    assert not supports_thinking("")


def test_tag_is_the_first_text_in_the_tool_calls_block() -> None:
    assert tool_call_tag(QWEN) == "<tool_call>"
    assert tool_call_tag(MISTRAL) == "[TOOL_CALLS] ["


def test_tag_is_found_in_an_else_if_inside_the_messages_loop() -> None:
    template = ('{{ range .Messages }}{{ if eq .Role "user" }}{{ .Content }}'
                '{{ else if .ToolCalls }}\n{{ range .ToolCalls }}<tool_call>{{ json .Function }}'
                '</tool_call>{{ end }}{{ end }}{{ end }}')
    assert tool_call_tag(template) == "<tool_call>"


def test_tag_defaults_to_a_json_object_without_text_before_the_calls() -> None:
    assert tool_call_tag(JSON) == "{"
    assert tool_call_tag("{{if .ToolCalls}}{{range .ToolCalls}}\r\n{{ . }}{{end}}]{{end}}") == "{"
    assert tool_call_tag("{{ .Prompt }}") == "{"
    assert tool_call_tag("") == "{"


def test_tag_is_a_list_when_the_block_opens_with_a_bracket() -> None:
    assert tool_call_tag(LIST) == "["


def test_tag_is_cut_before_an_opening_brace() -> None:
    assert tool_call_tag('{{if .ToolCalls}}functools[{"x": 1}{{end}}') == "functools["


def test_template_that_is_not_go_syntax_gets_the_json_object_tag() -> None:
    assert tool_call_tag("{% if tool_calls %}<tool_call>{% endif %}") == "{"
