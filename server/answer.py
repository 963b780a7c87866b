"""What the model said, split the way Ollama's handlers split it: thinking (when the request
asked to think), content, and tool calls (when the request offered tools)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server import errors
from server.thinking import ThinkingParser
from server.toolcalls import ToolCallParser
from workers import protocol
from workers.template.analysis import analyze


@dataclass
class Parts:
    thinking: str = ""
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    # The logprobs of the tokens this text came from (sent even while their text is held back
    # by a parser, as Ollama does).
    logprobs: list[protocol.Logprob] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.thinking or self.content or self.tool_calls or self.logprobs)

    def __add__(self, other: "Parts") -> "Parts":
        return Parts(self.thinking + other.thinking, self.content + other.content,
                     self.tool_calls + other.tool_calls, self.logprobs + other.logprobs)


class Answer:
    """Feeds streamed text through the thinking splitter, then the tool-call parser."""

    def __init__(self, template: str, think: bool, tools: list[dict[str, Any]]) -> None:
        self._thinking = ThinkingParser.from_template(template) if think else None
        names = [tool["function"]["name"] for tool in tools]
        self._tools = ToolCallParser(template, names) if tools else None

    def started(self, msg: protocol.Started) -> None:
        """The worker built the prompt; it may have ended inside the thinking block."""
        if msg.thinking and self._thinking is not None:
            self._thinking.opened()

    def feed(self, text: str) -> Parts:
        if self._thinking is None and self._tools is None:
            return Parts(content=text)  # every token of most answers: nothing to split
        thinking, content = self._thinking.feed(text) if self._thinking else ("", text)
        return Parts(thinking) + self._content(content, final=False)

    def finish(self) -> Parts:
        thinking, content = self._thinking.finish() if self._thinking else ("", "")
        return Parts(thinking) + self._content(content, final=True)

    def _content(self, text: str, final: bool) -> Parts:
        if self._tools is None:
            return Parts(content=text)
        content, calls = self._tools.feed(text)
        if final:
            rest, more = self._tools.finish()
            content, calls = content + rest, calls + more
        return Parts(content=content, tool_calls=calls)


def answer_for(model: str, full_name: str, template: str, think: bool | str | None,
               tools: list[dict[str, Any]] | None = None) -> Answer:
    """The splitter for this request's output; 400 where the model's template cannot do what
    the request asks, in Ollama's words (a missing tools capability names the model in full,
    thinking names it as asked). Parses the template (once; it is cached): not on the event
    loop."""
    info = analyze(template)
    if tools and not info.tools:
        raise errors.BadRequest(f"{full_name} does not support tools")
    if think and not info.thinking:
        raise errors.BadRequest(f'"{model}" does not support thinking')
    return Answer(template, bool(think), tools or [])
