"""`corral`: the command line, Ollama's verbs over corral's HTTP API.

    corral serve | bootstrap                  run the server / register gemma3:270m (server.cli)
    corral run MODEL [PROMPT]                 one answer, or a chat REPL on a terminal
    corral create NAME -f Modelfile           create a model from a Modelfile
    corral list | ls, ps, show, cp, rm, stop  manage models
    corral pull | push MODEL                  registry transfers (the server has none yet)

Every client verb talks to the server at OLLAMA_HOST (see cli/client.py). Whatever fails — a
missing model, no server, a server error — is one "Error: ..." line on stderr and exit status 1;
never a traceback (OLLAMA_DEBUG=1 adds one for an unexpected failure).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any, Callable, Coroutine

from server import __version__
from server.settings import help_text

PROG = "corral"


def build_parser() -> argparse.ArgumentParser:
    env_help = "environment:\n" + help_text()
    parser = argparse.ArgumentParser(
        prog=PROG, description="Ollama-compatible LLM server and its command line client.",
        epilog=env_help + "\n\nThe client commands reach the server at OLLAMA_HOST.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--version", action="store_true", help="show version information")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, aliases: tuple[str, ...] = (), **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, aliases=list(aliases), **kw)

    command("serve", "Start the server", aliases=("start",), epilog=env_help,
            formatter_class=argparse.RawDescriptionHelpFormatter)
    command("bootstrap", "Register the embedded gemma3:270m model in the store")

    create = command("create", "Create a model from a Modelfile")
    create.add_argument("model", metavar="MODEL")
    create.add_argument("-f", "--file", help='name of the Modelfile (default "Modelfile")')
    create.add_argument("-q", "--quantize", help="quantize the model to this level (e.g. q4_K_M)")

    show = command("show", "Show information for a model")
    show.add_argument("model", metavar="MODEL")
    for flag, what in (("license", "license"), ("modelfile", "Modelfile"),
                       ("parameters", "parameters"), ("template", "template"),
                       ("system", "system message")):
        show.add_argument(f"--{flag}", action="store_true", help=f"show the {what} of a model")
    show.add_argument("-v", "--verbose", action="store_true", help="show detailed model information")

    run = command("run", "Run a model", epilog="environment:\n  OLLAMA_HOST, OLLAMA_NOHISTORY",
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("model", metavar="MODEL")
    run.add_argument("prompt", metavar="PROMPT", nargs="*", help="the prompt (default: a chat)")
    run.add_argument("--format", default="", help="response format (e.g. json)")
    run.add_argument("--verbose", action="store_true", help="show timings for the response")
    run.add_argument("--keepalive", default="", help="how long to keep the model loaded (e.g. 5m)")
    run.add_argument("--nowordwrap", action="store_true",
                     help="don't wrap words to the next line automatically")
    run.add_argument("--think", nargs="?", const="true", default=None,
                     help="thinking: true/false or high/medium/low for models that think")
    run.add_argument("--hidethinking", action="store_true", help="hide thinking output")
    run.add_argument("--truncate", nargs="?", const="true", default=None, metavar="BOOL",
                     help="for embedding models: truncate inputs past the context length "
                          "(default: true); --truncate=false to get an error instead")
    run.add_argument("--dimensions", type=int, default=0,
                     help="truncate output embeddings to this dimension (embedding models only)")
    run.add_argument("--insecure", action="store_true", help=argparse.SUPPRESS)

    stop = command("stop", "Stop a running model")
    stop.add_argument("model", metavar="MODEL")

    for verb, what in (("pull", "Pull a model from a registry"),
                       ("push", "Push a model to a registry")):
        p = command(verb, what)
        p.add_argument("model", metavar="MODEL")
        p.add_argument("--insecure", action="store_true", help="use an insecure registry")

    ls = command("list", "List models", aliases=("ls",))
    ls.add_argument("prefix", nargs="?", default="", help=argparse.SUPPRESS)
    ps = command("ps", "List running models")
    ps.add_argument("prefix", nargs="?", default="", help=argparse.SUPPRESS)

    cp = command("cp", "Copy a model")
    cp.add_argument("source", metavar="SOURCE")
    cp.add_argument("destination", metavar="DESTINATION")

    rm = command("rm", "Remove a model")
    rm.add_argument("models", metavar="MODEL", nargs="+")

    helper = command("help", "Help about any command")
    helper.add_argument("topic", metavar="COMMAND", nargs="?")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    command = {"start": "serve", "ls": "list"}.get(args.command, args.command)
    if command == "run" and not any(word.startswith("-") for word in extra):
        args.prompt += extra  # prompt words after a flag: `run MODEL --verbose why is...`
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.version and command is None:
        return _run(_version)
    if command is None:
        parser.print_help()
        return 0
    if command == "help":
        return _help(parser, args.topic)
    if command in ("serve", "bootstrap"):
        return _server(command)
    from cli import commands  # noqa: PLC0415 - the client stack loads only for client verbs

    handlers: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
        "create": commands.create, "show": commands.show, "run": commands.run,
        "stop": commands.stop, "pull": commands.pull, "push": commands.push,
        "list": commands.list_models, "ps": commands.ps, "cp": commands.copy,
        "rm": commands.remove,
    }
    return _run(lambda: handlers[command](args))


def _run(coro_fn: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Runs a client command; any failure is one line on stderr and a non-zero status."""
    from cli.client import CLIError  # noqa: PLC0415

    try:
        return asyncio.run(coro_fn())
    except CLIError as exc:
        _flush_quietly()
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _flush_quietly()
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # `corral ls | head`: the reader left; not worth a message
        _silence_stdout()
        return 1
    except Exception as exc:  # noqa: BLE001 - a traceback is not a message for the user
        if _debug():
            import traceback  # noqa: PLC0415

            traceback.print_exc()
        _flush_quietly()
        text = " ".join(str(exc).split())
        print(f"Error: {type(exc).__name__}{': ' + text if text else ''}", file=sys.stderr)
        return 1


async def _version() -> int:
    """Ollama's `--version`: the server's version, and the client's when they differ."""
    from cli.client import Client, CLIError  # noqa: PLC0415

    server_version = ""
    try:
        async with Client() as client:
            server_version = await client.version()
    except CLIError:
        print("Warning: could not connect to a running corral server")
    if server_version:
        print(f"corral version is {server_version}")
    if server_version != __version__:
        print(f"Warning: client version is {__version__}")
    return 0


def _help(parser: argparse.ArgumentParser, topic: str | None) -> int:
    if not topic:
        parser.print_help()
        return 0
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    chosen = sub.choices.get(topic)
    if chosen is None:
        print(f'Error: unknown help topic "{topic}"', file=sys.stderr)
        return 1
    chosen.print_help()
    return 0


def _server(command: str) -> int:
    """`serve` and `bootstrap` run in this process, through server.cli."""
    from server import cli as server_cli  # noqa: PLC0415

    return server_cli.run(command)


def _debug() -> bool:
    return os.environ.get("OLLAMA_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def _flush_quietly() -> None:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError):
        _silence_stdout()


def _silence_stdout() -> None:
    """Points stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
