"""Native answers in OpenAI's words (server/openai/convert.py), as Ollama's openai package
writes them."""

from __future__ import annotations

import pytest

from server.answer import Parts
from server.openai import convert
from workers import protocol


def done(reason: str) -> protocol.Done:
    return protocol.Done(job_id=1, done_reason=reason, prompt_eval_count=3,
                         prompt_eval_duration=1, eval_count=5, eval_duration=1)


@pytest.mark.parametrize(("reason", "called", "expected"), [
    ("stop", False, "stop"), ("stop", True, "tool_calls"),
    ("length", False, "length"), ("length", True, "length")])
def test_a_call_turns_only_a_stop_into_tool_calls(reason: str, called: bool,
                                                  expected: str) -> None:
    assert convert.finish_reason(done(reason), called) == expected


def test_a_streamed_calls_index_counts_the_answers_calls_not_the_chunks() -> None:
    second = {"id": "call_b", "function": {"index": 1, "name": "f", "arguments": {"x": 1}}}
    [call] = convert.tool_calls(Parts(tool_calls=[second]))
    assert call == {"index": 1, "id": "call_b", "type": "function",
                    "function": {"name": "f", "arguments": '{"x":1}'}}


def test_chat_and_completions_sample_at_openais_defaults_where_the_request_is_silent() -> None:
    # Ollama's FromChatRequest / FromCompleteRequest: 1.0 over the Modelfile's parameters.
    assert convert.common({"model": "m"})["options"] == {"temperature": 1.0, "top_p": 1.0}
    given = convert.common({"model": "m", "temperature": 0.2, "top_p": 0.5})["options"]
    assert given == {"temperature": 0.2, "top_p": 0.5}
