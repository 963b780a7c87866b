"""The native answer as Anthropic's message, or as its stream of server-sent events.

A message's content is its blocks in order: thinking, text, then one `tool_use` block per call.
Streaming, each block is opened (`content_block_start`), filled (`content_block_delta`) and
closed (`content_block_stop`) in turn, its index its position in the message, between
`message_start` and `message_delta` + `message_stop`, as the SDK's accumulator expects
(anthropic `lib/streaming/_messages.py` appends each started block and indexes deltas by
position).
"""

from __future__ import annotations

import secrets
from typing import Any, Collection

import orjson

from server.anthropic.errors import error_body
from server.answer import Parts
from server.streaming import Framing
from workers import protocol

Event = dict[str, Any]

# The SDK requires a thinking block's signature. A local model signs nothing; llama-server
# sends an empty one too.
SIGNATURE = ""

# `event: <type>` before each `data:` line: the SDK dispatches on the event name (and raises
# on `error`). A failure after the stream began goes out as that `error` event.
FRAMING = Framing(
    "text/event-stream",
    lambda event: b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event)
    + b"\n\n",
    lambda message: error_body(500, message))


def new_id(prefix: str) -> str:
    """An id as Anthropic's look: `msg_…`, `toolu_…`."""
    return f"{prefix}_{secrets.token_hex(12)}"


def stop_reason(done: protocol.Done, tool_called: bool, stops: Collection[str]) -> str:
    """`stops`: the request's stop_sequences (a model's own stop strings end a turn)."""
    if tool_called:
        return "tool_use"
    if done.stop and done.stop in stops:
        return "stop_sequence"
    return "max_tokens" if done.done_reason == "length" else "end_turn"


def stop_sequence(done: protocol.Done, reason: str) -> str | None:
    return done.stop if reason == "stop_sequence" else None


def tool_use(call: dict[str, Any]) -> Event:
    """A native tool call as a `tool_use` block (its arguments are the `input` object)."""
    return {"type": "tool_use", "id": new_id("toolu"), "name": call["function"]["name"],
            "input": call["function"].get("arguments") or {}}


def blocks(parts: Parts) -> list[Event]:
    out: list[Event] = []
    if parts.thinking:
        out.append({"type": "thinking", "thinking": parts.thinking, "signature": SIGNATURE})
    if parts.content:
        out.append({"type": "text", "text": parts.content})
    return out + [tool_use(call) for call in parts.tool_calls]


def message(message_id: str, model: str, content: list[Event], reason: str | None,
            input_tokens: int, output_tokens: int, stop: str | None = None) -> Event:
    """A message; `stop_reason` null (only) at the start of a stream; `stop`: the stop
    sequence that ended it."""
    return {"id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": reason, "stop_sequence": stop,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}


class EventStream:
    """The stream events of one answer, fed its parts as they come."""

    def __init__(self, message_id: str, model: str, stops: Collection[str]) -> None:
        self._id, self._model, self._stops = message_id, model, stops
        self._started = False
        self._open: str | None = None  # the type of the block being filled: thinking or text
        self._index = -1  # the last block's
        self._called = False

    def feed(self, parts: Parts, input_tokens: int) -> list[Event]:
        """`input_tokens`: the prompt's, for `message_start` (sent before the first block)."""
        events: list[Event] = []
        if not self._started:
            self._started = True
            events.append({"type": "message_start", "message": message(
                self._id, self._model, [], None, input_tokens, 0)})
        if parts.thinking:
            events += self._fill("thinking", {"type": "thinking_delta", "thinking": parts.thinking})
        if parts.content:
            events += self._fill("text", {"type": "text_delta", "text": parts.content})
        for call in parts.tool_calls:
            self._called = True
            block = tool_use(call)
            events += self._close() + self._start({**block, "input": {}}) + [
                self._delta({"type": "input_json_delta",
                             "partial_json": orjson.dumps(block["input"]).decode()}),
                {"type": "content_block_stop", "index": self._index}]
        return events

    def finish(self, parts: Parts, done: protocol.Done) -> list[Event]:
        """The last parts' events, then the stop reason and the counts."""
        reason = stop_reason(done, self._called, self._stops)
        return self.feed(parts, done.prompt_eval_count) + self._close() + [
            {"type": "message_delta",
             "delta": {"stop_reason": reason, "stop_sequence": stop_sequence(done, reason)},
             "usage": {"input_tokens": done.prompt_eval_count,
                       "output_tokens": done.eval_count}},
            {"type": "message_stop"}]

    def _fill(self, kind: str, delta: Event) -> list[Event]:
        """A delta for the open block of this kind, opening it (and closing another) first."""
        events: list[Event] = []
        if self._open != kind:
            empty = {"type": kind, kind: ""}
            if kind == "thinking":
                empty["signature"] = SIGNATURE
            events = self._close() + self._start(empty)
            self._open = kind
        return events + [self._delta(delta)]

    def _start(self, block: Event) -> list[Event]:
        self._index += 1
        return [{"type": "content_block_start", "index": self._index, "content_block": block}]

    def _delta(self, delta: Event) -> Event:
        return {"type": "content_block_delta", "index": self._index, "delta": delta}

    def _close(self) -> list[Event]:
        """Closes the open thinking or text block; a thinking block gets its signature first
        (Anthropic sends a `signature_delta` before closing one)."""
        if self._open is None:
            return []
        events = [self._delta({"type": "signature_delta", "signature": SIGNATURE})] \
            if self._open == "thinking" else []
        self._open = None
        return events + [{"type": "content_block_stop", "index": self._index}]
