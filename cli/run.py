"""`corral run MODEL [PROMPT]`: one streamed answer, or the chat REPL (cli/repl.py).

As Ollama's RunHandler: the prompt is the arguments, with piped stdin put in front; with a
prompt, piped input or output that is not a terminal it answers once through /api/generate and
exits; otherwise it loads the model and opens the REPL, which talks through /api/chat. Answers
stream to stdout as they come; `--verbose` prints the timing block on stderr afterwards; Ctrl-C
stops the answer (the connection is closed, so the server stops generating too).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, TypeVar

import orjson
from rich.cells import cell_len

from cli.client import CLIError, Client
from cli.format import metrics_summary
from cli.progress import WaitSpinner

T = TypeVar("T")

# Ollama's readline colours for thinking text.
GREY, BOLD, DEFAULT = "\x1b[38;5;245m", "\x1b[1m", "\x1b[0m"


@dataclass
class RunOptions:
    model: str
    parent_model: str = ""
    prompt: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    loaded_messages: list[dict[str, Any]] = field(default_factory=list)
    word_wrap: bool = True
    format: str = ""
    system: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    keep_alive: str | None = None
    think: bool | str | None = None
    hide_thinking: bool = False
    verbose: bool = False


def parse_think(value: str | None) -> bool | str | None:
    if value is None:
        return None
    if value in ("", "true"):
        return True
    if value == "false":
        return False
    if value in ("high", "medium", "low", "max"):
        return value
    raise CLIError(f'invalid value for --think: "{value}" (must be true, false, high, medium, '
                   "low, or max)")


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


async def run_command(args: argparse.Namespace) -> int:
    opts = RunOptions(model=args.model, format=args.format, verbose=args.verbose,
                      keep_alive=args.keepalive or None, think=parse_think(args.think),
                      hide_thinking=args.hidethinking, word_wrap=not args.nowordwrap)
    prompts = list(args.prompt)
    interactive = True
    if not _isatty(sys.stdin):
        piped = sys.stdin.read()
        if piped:
            prompts.insert(0, piped)
        interactive = False
    opts.prompt = " ".join(prompts)
    if prompts or not _isatty(sys.stdout):
        interactive = False

    async with Client() as client:
        info = await client.show(opts.model)
        capabilities = info.get("capabilities") or []
        opts.parent_model = str((info.get("details") or {}).get("parent_model") or "")
        opts.loaded_messages = list(info.get("messages") or [])
        if "embedding" in capabilities:
            return await _embed(client, opts)
        if interactive:
            from cli.repl import interactive as repl  # noqa: PLC0415

            await load_model(client, opts)
            return await repl(client, opts)
        return await generate_once(client, opts)


async def _embed(client: Client, opts: RunOptions) -> int:
    if not opts.prompt:
        raise CLIError("embedding models require input text. Usage: corral run "
                       f'{opts.model} "your text here"')
    body: dict[str, Any] = {"model": opts.model, "input": opts.prompt}
    if opts.keep_alive is not None:
        body["keep_alive"] = opts.keep_alive
    resp = await client.call("POST", "/api/embed", body) or {}
    for embedding in resp.get("embeddings") or []:
        sys.stdout.write(orjson.dumps(embedding).decode() + "\n")
    return 0


async def load_model(client: Client, opts: RunOptions, keep_alive: Any = None) -> None:
    """Ollama's loadOrUnloadModel: a prompt-less generate loads the model (keep_alive 0
    unloads it), with a spinner meanwhile."""
    body: dict[str, Any] = {"model": opts.model}
    if keep_alive is not None or opts.keep_alive is not None:
        body["keep_alive"] = keep_alive if keep_alive is not None else opts.keep_alive
    if opts.think is not None:
        body["think"] = opts.think
    with WaitSpinner():
        async with aclosing(client.generate(body)) as events:
            async for _ in events:
                pass


def request_body(opts: RunOptions, **fields: Any) -> dict[str, Any]:
    """A generate or chat body: `fields` plus what every request of `run` carries when set."""
    body: dict[str, Any] = {"model": opts.model, "options": opts.options, **fields}
    for key, value in (("format", opts.format), ("keep_alive", opts.keep_alive),
                       ("think", opts.think)):
        if value not in (None, ""):
            body[key] = value
    return body


async def generate_once(client: Client, opts: RunOptions) -> int:
    body = request_body(opts, prompt=opts.prompt)
    if opts.system:
        body["system"] = opts.system
    interrupted, answer = await cancellable(
        stream_answer(client.generate(body), opts, chat=False, plain=not _isatty(sys.stdout)))
    if interrupted:
        sys.stdout.write("\n")
        sys.stdout.flush()
        return 0
    if opts.prompt:
        sys.stdout.write("\n\n")
    sys.stdout.flush()
    if opts.verbose and answer.last.get("done"):
        sys.stderr.write(metrics_summary(answer.last))
    return 0


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
        self.wrap = wrap and _isatty(stream)
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
