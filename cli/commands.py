"""The client verbs: each an `async (args) -> exit status` over one `Client` session.

They mirror the handlers in Ollama's cmd/cmd.go (ListHandler, ShowHandler, StopHandler, ...):
same output, same messages, with corral's server at the other end.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import aclosing
from pathlib import Path
from typing import Any

from cli.client import APIError, CLIError, Client
from cli.format import human_bytes, human_time, parse_time, processor, table
from cli.progress import StatusDisplay
from cli.show import show_info

# What the server answers on a route it does not have (no /api/pull or /api/push yet).
_NO_ROUTE = "not found"


async def list_models(args: argparse.Namespace) -> int:
    async with Client() as client:
        models = await client.list()
    prefix = (args.prefix or "").lower()
    rows = [[m.get("name", ""), str(m.get("digest", ""))[:12], human_bytes(m.get("size") or 0),
             human_time(m.get("modified_at"), "Never")]
            for m in models if str(m.get("name", "")).lower().startswith(prefix)]
    sys.stdout.write(table(rows, header=["NAME", "ID", "SIZE", "MODIFIED"]))
    return 0


async def ps(args: argparse.Namespace) -> int:
    async with Client() as client:
        models = await client.ps()
    rows = []
    for m in models:
        if not str(m.get("name", "")).startswith(args.prefix or ""):
            continue
        size, vram = int(m.get("size") or 0), int(m.get("size_vram") or 0)
        expires = parse_time(m.get("expires_at"))
        until = human_time(expires, "Never")
        if expires is not None and until.endswith(" ago"):
            until = "Stopping..."
        rows.append([m.get("name", ""), str(m.get("digest", ""))[:12], human_bytes(size),
                     processor(size, vram), str(m.get("context_length") or ""), until])
    sys.stdout.write(table(rows, header=["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]))
    return 0


async def show(args: argparse.Namespace) -> int:
    chosen = [flag for flag in ("license", "modelfile", "parameters", "system", "template")
              if getattr(args, flag)]
    if len(chosen) > 1:
        raise CLIError("only one of '--license', '--modelfile', '--parameters', '--system', "
                       "or '--template' can be specified")
    async with Client() as client:
        resp = await client.show(args.model, **({"verbose": True} if args.verbose else {}))
    if chosen:
        value = resp.get(chosen[0]) or ""
        text = "\n".join(map(str, value)) if isinstance(value, list) else str(value)
        # Ollama: Println for license, modelfile and parameters; Print for system and template.
        sys.stdout.write(text + ("\n" if chosen[0] in ("license", "modelfile", "parameters") else ""))
        return 0
    sys.stdout.write(show_info(resp, verbose=args.verbose))
    return 0


async def copy(args: argparse.Namespace) -> int:
    async with Client() as client:
        await client.copy(args.source, args.destination)
    print(f"copied '{args.source}' to '{args.destination}'")
    return 0


async def remove(args: argparse.Namespace) -> int:
    async with Client() as client:
        for name in args.models:
            try:  # unload it first, as Ollama does; a model that is not there is no warning
                await unload(client, name)
            except CLIError as exc:
                if "not found" not in str(exc).lower():
                    print(f"Warning: unable to stop model '{name}'", file=sys.stderr)
            await client.delete(name)
            print(f"deleted '{name}'")
    return 0


async def stop(args: argparse.Namespace) -> int:
    async with Client() as client:
        try:
            await unload(client, args.model)
        except APIError as exc:
            if "not found" in str(exc).lower():
                raise CLIError(f'couldn\'t find model "{args.model}" to stop') from None
            raise
    return 0


async def unload(client: Client, model: str) -> None:
    """Ollama's loadOrUnloadModel with keep_alive 0: a prompt-less generate that unloads."""
    await client.show(model)
    async with aclosing(client.generate({"model": model, "keep_alive": 0})) as events:
        async for _ in events:
            pass


async def create(args: argparse.Namespace) -> int:
    path = Path(args.file or "Modelfile")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if args.file:
            raise CLIError("specified Modelfile wasn't located") from None
        raise CLIError("no Modelfile in this folder; name one with -f") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"cannot read {path}: {exc}") from None
    body: dict[str, Any] = {"model": args.model, "modelfile": text}
    if args.quantize:
        body["quantize"] = args.quantize
    async with Client() as client:
        await _show_statuses(client.create(body), verb="pulling")
    return 0


async def pull(args: argparse.Namespace) -> int:
    async with Client() as client:
        await _transfer(client, "pull", {"model": args.model, "insecure": args.insecure})
    return 0


async def push(args: argparse.Namespace) -> int:
    async with Client() as client:
        await _transfer(client, "push", {"model": args.model, "insecure": args.insecure})
    print(f"\nYou can find your model at:\n\n\t{args.model}")
    return 0


async def _transfer(client: Client, verb: str, body: dict[str, Any]) -> None:
    stream = client.pull(body) if verb == "pull" else client.push(body)
    try:
        await _show_statuses(stream, verb=f"{verb}ing")
    except APIError as exc:
        if exc.status in (404, 405) and str(exc).strip().lower() in (_NO_ROUTE, "404 not found",
                                                                      "405 method not allowed"):
            raise CLIError(f"the server at {client.base} does not support {verb} "
                           f"(POST /api/{verb} answered {exc.status} {exc})") from None
        if verb == "push" and any(w in str(exc).lower() for w in ("access denied", "unauthorized")):
            raise CLIError("you are not authorized to push to this namespace, create the model "
                           "under a namespace you own") from None
        raise


async def _show_statuses(stream: Any, verb: str) -> None:
    with StatusDisplay(verb=verb) as display:
        async with aclosing(stream) as events:
            async for event in events:
                display.update(event)


async def run(args: argparse.Namespace) -> int:
    from cli.run import run_command  # noqa: PLC0415

    return await run_command(args)
