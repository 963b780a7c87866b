"""A `corral run` session: its settings, and the requests every one of its answers shares
(used by cli/run.py for one answer and by cli/repl.py for a chat)."""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from cli.client import CLIError, Client
from cli.progress import WaitSpinner


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
    multimodal: bool = False  # the model takes images: image paths in a prompt are attached


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
