"""How a streamed answer shows on the terminal, as Ollama's `run` shows it: thinking in grey
between "Thinking..." and "...done thinking.", content word-wrapped, Ctrl-C stopping only the
answer."""

from __future__ import annotations

import asyncio
import signal
import sys
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, TypeVar

import orjson
from rich.cells import cell_len

from cli.progress import WaitSpinner
from cli.session import RunOptions

T = TypeVar("T")

# Ollama's readline colours for thinking text.
GREY, BOLD, DEFAULT = "\x1b[38;5;245m", "\x1b[1m", "\x1b[0m"


def isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


@dataclass
class Answer:
    content: str = ""
    thinking: str = ""
    role: str = "assistant"
    last: dict[str, Any] = field(default_factory=dict)


async def stream_answer(events: AsyncIterator[dict[str, Any]], opts: RunOptions, *, chat: bool,
                        plain: bool = False, answer: Answer | None = None) -> Answer:
    """Writes a streamed answer to stdout as Ollama's generate/chat callbacks do: the spinner
    until the first piece, thinking between "Thinking..." and "...done thinking.", then the
    content, word-wrapped on a terminal. Fills and returns `answer` (given, it survives a
    cancellation with what had arrived)."""
    answer = answer or Answer()
    out = Display(sys.stdout, wrap=opts.word_wrap and not plain)
    spinner = WaitSpinner().start()
    thinking_open = thinking_closed = False
    try:
        async with aclosing(events) as stream:
            async for event in stream:
                answer.last = event
                message = (event.get("message") or {}) if chat else {}
                content = str((message.get("content") if chat else event.get("response")) or "")
                thinking = str((message.get("thinking") if chat else event.get("thinking")) or "")
                if chat and message.get("role"):
                    answer.role = str(message["role"])
                if content or not opts.hide_thinking:
                    spinner.stop()
                if thinking and not opts.hide_thinking:
                    if not thinking_open:
                        out.raw("Thinking...\n" if plain else f"{GREY}{BOLD}Thinking...\n{DEFAULT}{GREY}")
                        thinking_open, thinking_closed = True, False
                    answer.thinking += thinking
                    out.write(thinking)
                tool_calls = message.get("tool_calls") if chat else event.get("tool_calls")
                if thinking_open and not thinking_closed and (content or tool_calls):
                    if not answer.thinking.endswith("\n"):
                        out.raw("\n")
                    out.raw("...done thinking.\n\n" if plain
                            else f"{GREY}{BOLD}...done thinking.\n\n{DEFAULT}")
                    thinking_open, thinking_closed = False, True
                    out.reset()
                answer.content += content
                out.write(content)
                for call in tool_calls or []:
                    fn = call.get("function") or {}
                    out.raw(f"Tool call: {fn.get('name', '')}("
                            f"{orjson.dumps(fn.get('arguments') or {}).decode()})\n")
    finally:
        spinner.stop()
        if thinking_open and not plain:
            out.raw(DEFAULT)
        sys.stdout.flush()
    return answer


async def cancellable(work: Awaitable[T]) -> tuple[bool, T]:
    """Runs `work`, turning Ctrl-C (SIGINT) into cancelling just it: (True, None) when it was
    stopped that way, (False, result) otherwise. Cancelling closes the HTTP response, so the
    server sees the client leave and stops generating."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    previous = signal.getsignal(signal.SIGINT)
    installed = False
    try:
        loop.add_signal_handler(signal.SIGINT, task.cancel)
        installed = True
    except (NotImplementedError, RuntimeError, ValueError):
        pass  # not the main thread, or no signals here: Ctrl-C behaves as it would anyway
    try:
        return False, await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if task.cancelled() and not (current is not None and current.cancelling()):
            return True, None  # type: ignore[return-value]
        raise
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, previous)


class Display:
    """Ollama's displayResponse: streamed text with words wrapped before the terminal's edge
    (a word that would cross it is erased and moved to the next line)."""

    def __init__(self, stream: Any, wrap: bool, width: int | None = None) -> None:
        self.stream = stream
        self.wrap = wrap and isatty(stream)
        self.width = width
        self.line = 0
        self.word = ""

    def reset(self) -> None:
        self.line, self.word = 0, ""

    def raw(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def write(self, text: str) -> None:
        if not text:
            return
        if not self.wrap:
            self.raw(text)
            return
        width = self.width or _terminal_width()
        if width < 10:
            self.raw(text)
            return
        self.raw(self.wrapped(text, width))

    def wrapped(self, text: str, width: int) -> str:
        """The text to write (cursor moves included) for `text`, continuing the current line."""
        out: list[str] = []
        for ch in text:
            w = cell_len(ch)
            if self.line + w > width - 5 and ch not in "\r\n":
                length = cell_len(self.word)
                if 0 < length <= width - 10:  # move the word that would cross the edge down
                    out.append(f"\x1b[{length}D\x1b[K\n{self.word}")
                    self.line = length
                else:
                    out.append("\n")
                    self.line = 0
                    if ch in " \t":
                        self.word = ""
                        continue  # a space at the edge becomes the line break
            out.append(ch)
            self.line += w
            if ch in "\r\n":
                self.line, self.word = 0, ""
            elif w >= 2 or ch in " \t":
                self.word = ""
            else:
                self.word += ch
        return "".join(out)


def _terminal_width() -> int:
    import shutil  # noqa: PLC0415

    return shutil.get_terminal_size((80, 24)).columns
