"""What the model said, as the output items and stream events of OpenAI's Responses API.

A `reasoning` item holds the model's thinking (as its summary text, as Ollama gives it: what
Codex shows and sends back), a `message` item its text, and a `function_call` item each tool
call. One `Output` turns the model's parts into the stream's events, numbered, and adds them up
into the response object, so a streamed and an unstreamed answer hold the same items.
"""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from server.answer import Parts
from server.openai import convert
from workers import protocol

Event = dict[str, Any]


@dataclass(frozen=True)
class _TextItem:
    """A kind of item whose text streams into one part: where the part lies in the item, its
    empty value, and the names of the events that add it, stream its text and end them."""

    parts: str  # the item's list of parts
    index: str  # the events' key for the part's place in that list
    empty: dict[str, Any]
    part_events: str
    text_events: str
    extra: dict[str, Any]  # more fields of the text events


_TEXT_ITEMS = {
    "message": _TextItem("content", "content_index",
                         {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                         "response.content_part", "response.output_text", {"logprobs": []}),
    "reasoning": _TextItem("summary", "summary_index", {"type": "summary_text", "text": ""},
                           "response.reasoning_summary_part", "response.reasoning_summary_text",
                           {}),
}


def new_id(prefix: str) -> str:
    """An id as OpenAI's look: resp_…, msg_…, rs_…, fc_…."""
    return f"{prefix}_{secrets.token_hex(12)}"


class Output:
    """The output items of one response, built from the model's parts as they come: OpenAI's
    stream events (numbered), and the response object they add up to."""

    def __init__(self, envelope: dict[str, Any]) -> None:
        self._envelope = envelope  # id, model, and the settings the response object repeats
        self._items: list[dict[str, Any]] = []  # in output_index order
        self._open: dict[str, Any] | None = None  # the reasoning or message item being written
        self._sequence = 0
        self._started = False

    def feed(self, parts: Parts) -> list[Event]:
        """The events for these parts; the first call opens the stream."""
        events = [] if self._started else self._start()
        if parts.thinking:
            events += self._text("reasoning", parts.thinking)
        if parts.content:
            events += self._text("message", parts.content)
        for call in convert.tool_calls(parts):
            events += self._call(call["id"], call["function"]["name"],
                                 call["function"]["arguments"])
        return events

    def finish(self, done: protocol.Done) -> list[Event]:
        """The closing events: the open item done, then the response completed or (out of
        tokens, as OpenAI says) incomplete."""
        status = "incomplete" if done.done_reason == "length" else "completed"
        events = [] if self._started else self._start()
        if not self._items:
            events += self._text("message", "")  # nothing said: still a message, as OpenAI
        events += self._close(status)
        return events + [self._event(f"response.{status}", response=self.response(status, done))]

    def failed(self, message: str) -> Event:
        """The event that ends a stream the generation failed in (Framing.error)."""
        response = {**self.response("failed"),
                    "error": {"code": "server_error", "message": message}}
        return self._event("response.failed", response=response)

    def response(self, status: str, done: protocol.Done | None = None) -> dict[str, Any]:
        """The response object: what was said so far, and with `done`, its usage."""
        return {
            **self._envelope, "status": status, "output": copy.deepcopy(self._items),
            "error": None, "completed_at": convert.now() if done else None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete"
            else None,
            "usage": _usage(done) if done else None,
        }

    def _start(self) -> list[Event]:
        self._started = True
        return [self._event("response.created", response=self.response("in_progress")),
                self._event("response.in_progress", response=self.response("in_progress"))]

    def _text(self, kind: str, delta: str) -> list[Event]:
        """More text of a reasoning or message item: the item opened first where it is not the
        open one (which closes the one before)."""
        events = []
        if self._open is None or self._open["type"] != kind:
            events = self._close("completed") + self._add(kind)
        item, spec = self._open, _TEXT_ITEMS[kind]
        assert item is not None
        item[spec.parts][0]["text"] += delta
        if not delta:
            return events
        return events + [self._event(f"{spec.text_events}.delta", **self._where(item),
                                     delta=delta, **spec.extra)]

    def _add(self, kind: str) -> list[Event]:
        """A new reasoning or message item with its one part, now open."""
        if kind == "message":
            item = {"id": new_id("msg"), "type": "message", "status": "in_progress",
                    "role": "assistant", "content": []}
        else:
            item = {"id": new_id("rs"), "type": "reasoning", "status": "in_progress",
                    "summary": []}
        spec = _TEXT_ITEMS[kind]
        self._items.append(item)
        events = [self._event("response.output_item.added", output_index=len(self._items) - 1,
                              item=copy.deepcopy(item))]
        item[spec.parts].append(copy.deepcopy(spec.empty))
        self._open = item
        return events + [self._event(f"{spec.part_events}.added", **self._where(item),
                                     part=copy.deepcopy(spec.empty))]

    def _close(self, status: str) -> list[Event]:
        """The open item's text done, its part done, the item done."""
        item = self._open
        if item is None:
            return []
        self._open = None
        item["status"] = status
        spec = _TEXT_ITEMS[item["type"]]
        part = item[spec.parts][0]
        where = self._where(item)
        return [self._event(f"{spec.text_events}.done", **where, text=part["text"],
                            **spec.extra),
                self._event(f"{spec.part_events}.done", **where, part=copy.deepcopy(part)),
                self._event("response.output_item.done", output_index=where["output_index"],
                            item=copy.deepcopy(item))]

    def _where(self, item: dict[str, Any]) -> dict[str, Any]:
        """The fields that place a text event: the open item is the last one, its part the
        first."""
        return {"item_id": item["id"], "output_index": len(self._items) - 1,
                _TEXT_ITEMS[item["type"]].index: 0}

    def _call(self, call_id: str, name: str, arguments: str) -> list[Event]:
        """A function_call item, whole: the parser gives each call complete."""
        events = self._close("completed")
        item = {"id": new_id("fc"), "type": "function_call", "status": "in_progress",
                "call_id": call_id, "name": name, "arguments": ""}
        self._items.append(item)
        where = {"item_id": item["id"], "output_index": len(self._items) - 1}
        events.append(self._event("response.output_item.added",
                                  output_index=where["output_index"], item=copy.deepcopy(item)))
        item.update(arguments=arguments, status="completed")
        # `name` on the done event: openai-python before 2.x requires it; later ones allow it.
        return events + [
            self._event("response.function_call_arguments.delta", **where, delta=arguments),
            self._event("response.function_call_arguments.done", **where, arguments=arguments,
                        name=name),
            self._event("response.output_item.done", output_index=where["output_index"],
                        item=copy.deepcopy(item))]

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return event


def _usage(done: protocol.Done) -> dict[str, Any]:
    """OpenAI's usage, with the details its SDK requires. Thinking is not counted apart from
    the answer, so reasoning_tokens stays 0."""
    return {"input_tokens": done.prompt_eval_count,
            "input_tokens_details": {"cached_tokens": done.prompt_cached,
                                     "cache_write_tokens": 0},
            "output_tokens": done.eval_count,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": done.prompt_eval_count + done.eval_count}


def sse_event(event: Event) -> bytes:
    """One server-sent event as OpenAI writes the Responses stream: named by its type."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
