"""A forced tool call: which tools it may call, and the schema and tag that hold the answer."""

from __future__ import annotations

import pytest

from server import errors
from server.toolchoice import ForcedCall, call_format, forced

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time"}}
TAGGED = "{{ if .ToolCalls }}<tool_call>{{ range .ToolCalls }}{{ . }}{{ end }}{{ end }}"


def test_required_may_call_any_tool() -> None:
    assert forced([WEATHER, TIME], None) == ForcedCall(("get_weather", "get_time"))


def test_a_named_tool_must_be_among_the_tools() -> None:
    with pytest.raises(errors.BadRequest, match='"get_news", which is not among the tools'):
        forced([WEATHER], "get_news")


def test_one_tool_is_one_object_of_its_name_and_parameters() -> None:
    schema, tag = call_format(ForcedCall(("get_weather",)), [WEATHER, TIME], "{{ .Prompt }}")
    assert schema["properties"]["name"] == {"const": "get_weather"}
    assert schema["properties"]["arguments"]["required"] == ["city"] and tag == ""


def test_several_tools_are_any_of_their_calls_after_the_templates_tag() -> None:
    schema, tag = call_format(ForcedCall(("get_weather", "get_time")), [WEATHER, TIME], TAGGED)
    assert [s["properties"]["name"]["const"] for s in schema["anyOf"]] == ["get_weather",
                                                                          "get_time"]
    assert schema["anyOf"][1]["properties"]["arguments"] == {"type": "object"}
    assert tag == "<tool_call>"
