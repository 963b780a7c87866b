"""`corral run MODEL [PROMPT]`: one streamed answer, or the chat REPL (cli/repl.py).

As Ollama's RunHandler: the prompt is the arguments, with piped stdin put in front; with a
prompt, piped input or output that is not a terminal it answers once through /api/generate and
exits; otherwise it loads the model and opens the REPL, which talks through /api/chat. Answers
stream to stdout as they come (cli/display.py); `--verbose` prints the timing block on stderr
afterwards; Ctrl-C stops the answer (the connection is closed, so the server stops generating
too).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from cli.attachments import extract_images
from cli.client import CLIError, Client
from cli.display import cancellable, isatty, stream_answer
from cli.format import metrics_summary
from cli.session import RunOptions, load_model, parse_think, request_body


async def run_command(args: argparse.Namespace) -> int:
    opts = RunOptions(model=args.model, format=args.format, verbose=args.verbose,
                      keep_alive=args.keepalive or None, think=parse_think(args.think),
                      hide_thinking=args.hidethinking, word_wrap=not args.nowordwrap)
    prompts = list(args.prompt)
    interactive = True
    if not isatty(sys.stdin):
        piped = sys.stdin.read()
        if piped:
            prompts.insert(0, piped)
        interactive = False
    opts.prompt = " ".join(prompts)
    if prompts or not isatty(sys.stdout):
        interactive = False

    async with Client() as client:
        info = await client.show(opts.model)
        capabilities = info.get("capabilities") or []
        opts.multimodal = "vision" in capabilities
        opts.parent_model = str((info.get("details") or {}).get("parent_model") or "")
        opts.loaded_messages = list(info.get("messages") or [])
        if "embedding" in capabilities:
            return await _embed(client, opts, parse_truncate(args.truncate), args.dimensions)
        if interactive:
            from cli.repl import interactive as repl  # noqa: PLC0415 - prompt_toolkit: REPL only

            await load_model(client, opts)
            return await repl(client, opts)
        return await generate_once(client, opts)


def parse_truncate(value: str | None) -> bool | None:
    """--truncate's value as Go's strconv.ParseBool reads it; None: not given (the server's
    default, true)."""
    if value is None:
        return None
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise CLIError(f'invalid argument "{value}" for "--truncate" flag: strconv.ParseBool: '
                   f'parsing "{value}": invalid syntax')


async def _embed(client: Client, opts: RunOptions, truncate: bool | None, dimensions: int) -> int:
    """As Ollama's generateEmbedding: the flags go into /api/embed only when set."""
    if not opts.prompt:
        raise CLIError("embedding models require input text. Usage: corral run "
                       f'{opts.model} "your text here"')
    body: dict[str, Any] = {"model": opts.model, "input": opts.prompt}
    if opts.keep_alive is not None:
        body["keep_alive"] = opts.keep_alive
    if truncate is not None:
        body["truncate"] = truncate
    if dimensions > 0:
        body["dimensions"] = dimensions
    resp = await client.call("POST", "/api/embed", body) or {}
    for embedding in resp.get("embeddings") or []:
        sys.stdout.write(orjson.dumps(embedding).decode() + "\n")
    return 0


async def generate_once(client: Client, opts: RunOptions) -> int:
    prompt, images = extract_images(opts.prompt) if opts.multimodal else (opts.prompt, [])
    body = request_body(opts, prompt=prompt)
    if images:
        body["images"] = images
    if opts.system:
        body["system"] = opts.system
    interrupted, answer = await cancellable(
        stream_answer(client.generate(body), opts, chat=False, plain=not isatty(sys.stdout)))
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
