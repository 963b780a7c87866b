"""Tool calls: the tag from the chat template, calls and content split off the stream as Ollama does."""

from __future__ import annotations

import re
from typing import Any

from server.toolcalls import ToolCallParser

QWEN = ('{{if .ToolCalls}}<tool_call>{{range .ToolCalls}}{"name": "{{.Function.Name}}", '
        '"arguments": {{json .Function.Arguments}}}{{end}}</tool_call>{{end}}')
MISTRAL = ('{{if .ToolCalls}}[TOOL_CALLS] [{{range .ToolCalls}}{"name": "{{.Function.Name}}", '
           '"arguments": {{.Function.Arguments}}}{{end}}][/TOOL_CALLS]{{end}}')
JSON = ('{{if .ToolCalls}}{{range .ToolCalls}}{"name": "{{.Function.Name}}", '
        '"arguments": {{.Function.Arguments}}}{{end}}{{end}}')
LIST = ('{{if .ToolCalls}}[{{range .ToolCalls}}{"name": "{{.Function.Name}}", '
        '"arguments": {{.Function.Arguments}}}{{end}}]{{end}}')
NAMES = ["get_temperature", "get_conditions", "say_hello", "say_hello_world", "add"]


def run(parser: ToolCallParser, pieces: list[str]) -> tuple[str, list[dict[str, Any]]]:
    content, calls = [], []
    for piece in pieces:
        c, found = parser.feed(piece)
        content.append(c)
        calls.extend(found)
    c, found = parser.finish()
    return "".join(content) + c, calls + found


def fns(calls: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(c["function"]["name"], c["function"]["arguments"]) for c in calls]


def test_explicit_tag_overrides_the_template() -> None:
    assert ToolCallParser(QWEN, NAMES, tag="<call>").tag == "<call>"


def test_call_has_ollamas_json_shape_with_id_and_index() -> None:
    parser = ToolCallParser(QWEN, NAMES)
    content, calls = parser.feed('<tool_call>{"name": "add", "arguments": {"a": 1, "b": "2"}}</tool_call>')
    assert content == ""
    assert len(calls) == 1
    assert re.fullmatch(r"call_[a-z0-9]{8}", calls[0]["id"])
    assert calls[0]["function"] == {"index": 0, "name": "add", "arguments": {"a": 1, "b": "2"}}


def test_plain_text_is_streamed_as_content() -> None:
    assert run(ToolCallParser(QWEN, NAMES), ["Hello, I'll use the say_hello tool."]) == (
        "Hello, I'll use the say_hello tool.", [])


def test_text_before_the_tag_is_streamed_as_content() -> None:
    parser = ToolCallParser(QWEN, NAMES)
    content, calls = parser.feed('Let me check. <tool_call>{"name": "get_temperature", '
                                 '"arguments": {"city": "New York"}}</tool_call>')
    assert content == "Let me check. "
    assert fns(calls) == [("get_temperature", {"city": "New York"})]


def test_several_calls_get_increasing_indexes() -> None:
    content, calls = run(ToolCallParser(QWEN, NAMES), [
        '<tool_call>{"name": "say_hello", "arguments": {}}</tool_call>'
        '<tool_call>{"name": "get_conditions", "arguments": {"location": "Tokyo"}}</tool_call>'])
    assert [c["function"]["index"] for c in calls] == [0, 1]
    assert fns(calls) == [("say_hello", {}), ("get_conditions", {"location": "Tokyo"})]


def test_list_of_calls_after_the_tag() -> None:
    content, calls = run(ToolCallParser(MISTRAL, NAMES), [
        '[TOOL_CALLS] [{"name": "get_temperature", "arguments": {"city": "London"}}, '
        '{"name": "get_conditions", "arguments": {"location": "Tokyo"}}][/TOOL_CALLS]'])
    assert content == ""
    assert fns(calls) == [("get_temperature", {"city": "London"}),
                          ("get_conditions", {"location": "Tokyo"})]


def test_bare_json_object_is_a_call_when_the_template_has_no_tag() -> None:
    content, calls = run(ToolCallParser(JSON, NAMES),
                         ["{", '"name": "get_temperature",', '"arguments": {', '"city": "Tokyo"', "}", "}"])
    assert (content, fns(calls)) == ("", [("get_temperature", {"city": "Tokyo"})])


def test_bare_json_list_of_calls_with_the_bracket_tag() -> None:
    content, calls = run(ToolCallParser(LIST, NAMES), [
        '[{"name": "get_temperature", "arguments": {"city": "London"}},',
        ' {"name": "get_conditions", "arguments": {"location": "Tokyo"}}]'])
    assert content == ""
    assert fns(calls) == [("get_temperature", {"city": "London"}),
                          ("get_conditions", {"location": "Tokyo"})]


def test_parameters_key_is_accepted_for_arguments() -> None:
    _, calls = run(ToolCallParser(QWEN, NAMES),
                   ['<tool_call>{"name": "add", "parameters": {"a": 5}}</tool_call>'])
    assert fns(calls) == [("add", {"a": 5})]


def test_arguments_given_as_a_json_string_are_decoded() -> None:
    _, calls = run(ToolCallParser(QWEN, NAMES),
                   ['<tool_call>{"name": "add", "arguments": "{\\"a\\": 5, \\"b\\": [1]}"}</tool_call>'])
    assert fns(calls) == [("add", {"a": 5, "b": [1]})]


def test_arguments_before_the_name_are_found() -> None:
    _, calls = run(ToolCallParser(QWEN, NAMES),
                   ['<tool_call>{"arguments": {"a": "5", "b": "10"}, "name": "add"}</tool_call>'])
    assert fns(calls) == [("add", {"a": "5", "b": "10"})]


def test_name_then_bare_arguments_object_is_a_call() -> None:
    template = "{{if .ToolCalls}}[TOOL_CALLS]{{range .ToolCalls}}{{.Function.Name}}[ARGS]{{end}}{{end}}"
    _, calls = run(ToolCallParser(template, NAMES), ['[TOOL_CALLS]add[ARGS]{"a": 1, "b": 2}'])
    assert fns(calls) == [("add", {"a": 1, "b": 2})]


def test_braces_inside_strings_do_not_end_the_object() -> None:
    _, calls = run(ToolCallParser(QWEN, NAMES),
                   ['<tool_call>{"name": "add", "arguments": {"a": "}{\\"", "b": "]"}}</tool_call>'])
    assert fns(calls) == [("add", {"a": '}{"', "b": "]"})]


def test_call_split_at_every_position_gives_the_same_result() -> None:
    text = ('Sure. <tool_call>{"name": "say_hello_world", "arguments": {"to": "a}b"}}</tool_call>'
            '<tool_call>{"name": "say_hello", "arguments": "{\\"n\\": 1}"}</tool_call>')
    want = ("Sure. ", [("say_hello_world", {"to": "a}b"}), ("say_hello", {"n": 1})])
    for i in range(len(text) + 1):
        content, calls = run(ToolCallParser(QWEN, NAMES), [text[:i], text[i:]])
        assert (content, fns(calls)) == want, i
        for j in range(i, len(text) + 1, 3):
            content, calls = run(ToolCallParser(QWEN, NAMES), [text[:i], text[i:j], text[j:]])
            assert (content, fns(calls)) == want, (i, j)
    content, calls = run(ToolCallParser(QWEN, NAMES), list(text))
    assert (content, fns(calls)) == want


def test_name_that_may_still_grow_into_a_longer_tool_name_waits() -> None:
    parser = ToolCallParser(QWEN, NAMES)
    assert parser.feed('<tool_call>{"name": "say_hello') == ("", [])
    content, calls = parser.feed('_world", "arguments": {}}</tool_call>')
    assert fns(calls) == [("say_hello_world", {})]


def test_name_without_arguments_is_not_a_call() -> None:
    assert run(ToolCallParser(QWEN, NAMES), ['<tool_call>{"name": "say_hello"}</tool_call>']) == ("", [])


def test_unknown_tool_after_a_tag_is_swallowed() -> None:
    assert run(ToolCallParser(QWEN, NAMES),
               ['<tool_call>{"name": "search", "arguments": {"q": "x"}}</tool_call>']) == ("", [])


def test_unknown_tool_as_bare_json_is_sent_as_content_once_closed() -> None:
    parser = ToolCallParser(JSON, NAMES)
    assert parser.feed('{"name": "search", ') == ("", [])
    text = '{"name": "search", "arguments": {"q": "x"}} more'
    assert parser.feed('"arguments": {"q": "x"}} more') == (text, [])
    assert parser.feed(" text") == (" text", [])


def test_text_before_a_bare_json_object_turns_tool_parsing_off() -> None:
    text = 'Here: {"name": "add", "arguments": {"a": 1}}'
    assert run(ToolCallParser(JSON, NAMES), [text]) == (text, [])


def test_code_with_braces_is_content() -> None:
    text = 'for { fmt.Println("hello") }'
    assert run(ToolCallParser(JSON, NAMES), [text]) == (text, [])


def test_bracketed_text_is_content_with_the_list_tag() -> None:
    assert run(ToolCallParser(LIST, NAMES), ["[special", " del", "ivery]"]) == ("[special delivery]", [])


def test_unfinished_json_without_a_call_is_sent_at_finish() -> None:
    parser = ToolCallParser(JSON, NAMES)
    assert parser.feed('{"name": "get_temperature", "arguments": {') == ("", [])
    assert parser.finish() == ('{"name": "get_temperature", "arguments": {', [])


def test_leftover_after_a_call_is_not_sent_at_finish() -> None:
    parser = ToolCallParser(JSON, NAMES)
    _, calls = parser.feed('{"name": "add", "arguments": {}} {"trailing": ')
    assert fns(calls) == [("add", {})]
    assert parser.finish() == ("", [])


def test_text_that_only_started_like_the_tag_is_released() -> None:
    parser = ToolCallParser(QWEN, NAMES)
    assert parser.feed("a <tool_") == ("a ", [])
    assert parser.feed("box> b") == ("<tool_box> b", [])


def test_partial_tag_at_the_end_of_generation_is_flushed() -> None:
    parser = ToolCallParser(QWEN, NAMES)
    assert parser.feed("bye <tool") == ("bye ", [])
    assert parser.finish() == ("<tool", [])


def test_invalid_object_is_skipped_for_a_later_valid_one() -> None:
    _, calls = run(ToolCallParser(QWEN, NAMES),
                   ['<tool_call>{oops} {"name": "add", "arguments": {"a": 1}}</tool_call>'])
    assert fns(calls) == [("add", {"a": 1})]


def test_text_after_the_tag_is_never_content() -> None:
    parser = ToolCallParser(QWEN, NAMES)
    parser.feed('<tool_call>{"name": "add", "arguments": {}}</tool_call>')
    assert parser.feed(" and some words") == ("", [])
    assert parser.finish() == ("", [])

