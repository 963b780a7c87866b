"""The chat REPL of `corral run MODEL` on a terminal: Ollama's generateInteractive.

prompt_toolkit reads the lines (">>> ", "... " inside a multi-line message; history in
~/.corral/history unless OLLAMA_NOHISTORY is set; bracketed paste). Each message goes to
/api/chat with the conversation so far. Commands: /set (parameter, system, format, verbose,
history, wordwrap, think), /show (info, license, modelfile, parameters, system, template),
/load, /save, /clear, /list, /bye, /? — with Ollama's wording. Ctrl-C stops an answer (or, at
the prompt, clears the line); Ctrl-D or /bye leaves.
"""

from __future__ import annotations

import os
import sys
from contextlib import aclosing
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, History, InMemoryHistory

from cli.attachments import extract_images
from cli.client import APIError, CLIError, Client
from cli.format import go_value, metrics_summary, table
from cli.display import Answer, Display, cancellable, stream_answer
from cli.session import RunOptions, load_model, request_body
from cli.show import show_info

PROMPT, ALT_PROMPT = ">>> ", "... "
PLACEHOLDER, ALT_PLACEHOLDER = "Send a message (/? for help)", "Press Enter to send"
HISTORY_FILE = Path("~/.corral/history")

USAGE = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message.

"""

USAGE_SET = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think             Enable thinking
  /set nothink           Disable thinking

"""

USAGE_SHORTCUTS = """Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line (Home)
  Ctrl + e            Move to the end of the line (End)
   Alt + b            Move back (left) one word
   Alt + f            Move forward (right) one word
  Ctrl + k            Delete the sentence after the cursor
  Ctrl + u            Delete the sentence before the cursor
  Ctrl + w            Delete the word before the cursor

  Ctrl + l            Clear the screen
  Ctrl + c            Stop the model from responding
  Ctrl + d            Exit corral (/bye)

"""

USAGE_SHOW = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template

"""

USAGE_PARAMETERS = """Available Parameters:
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from top k num of tokens
  /set parameter top_p <float>          Pick token based on sum of probabilities
  /set parameter min_p <float>          Pick token based on top token probability * min_p
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    Set how far back to look for repetitions
  /set parameter num_gpu <int>          The number of layers to send to the GPU
  /set parameter stop <string> <string> ...   Set the stop parameters

"""

_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


class ParameterError(ValueError):
    pass


def parse_parameter(name: str, values: list[str]) -> Any:
    """Ollama's api.FormatParams for one `/set parameter NAME VALUE...`: the typed value."""
    from workers.options import BY_NAME  # noqa: PLC0415 - the one table of options

    opt = BY_NAME.get(name)
    if opt is None:
        raise ParameterError(f"unknown parameter '{name}'")
    shown = "[" + " ".join(values) + "]"
    if opt.kind is list:
        return list(values)
    if opt.kind is bool:
        if values[0] in _GO_TRUE:
            return True
        if values[0] in _GO_FALSE:
            return False
        raise ParameterError(f"invalid bool value {shown}")
    try:
        return int(values[0], 10) if opt.kind is int else float(values[0])
    except ValueError:
        kind = "int" if opt.kind is int else "float"
        raise ParameterError(f"invalid {kind} value {shown}") from None


class _SwitchableHistory(History):
    """A history that `/set nohistory` stops recording into (lines stay recallable)."""

    def __init__(self, inner: History, enabled: bool) -> None:
        super().__init__()
        self.inner = inner
        self.enabled = enabled

    def load_history_strings(self) -> Any:
        return self.inner.load_history_strings()

    def store_string(self, string: str) -> None:
        if self.enabled:
            self.inner.store_string(string)

    def append_string(self, string: str) -> None:
        if self.enabled:
            super().append_string(string)


def _history() -> _SwitchableHistory:
    enabled = not os.environ.get("OLLAMA_NOHISTORY", "").strip()
    inner: History = InMemoryHistory()
    try:
        path = HISTORY_FILE.expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        inner = FileHistory(str(path))
    except OSError:
        pass
    return _SwitchableHistory(inner, enabled)


def _err(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


async def interactive(client: Client, opts: RunOptions) -> int:
    for msg in opts.loaded_messages:  # the model's own MESSAGE history, shown as Ollama does
        if msg.get("role") == "user":
            print(f">>> {msg.get('content', '')}")
        elif msg.get("role") == "assistant":
            Display(sys.stdout, wrap=opts.word_wrap).write(str(msg.get("content", "")))
            print("\n")

    history = _history()
    session: PromptSession[str] = PromptSession(history=history)
    text: list[str] = []  # the message being built (Ollama's sb)
    multiline: str | None = None  # None, "prompt" or "system"
    use_alt = False

    while True:
        prompt, placeholder = (ALT_PROMPT, ALT_PLACEHOLDER) if use_alt else (PROMPT, PLACEHOLDER)
        try:
            line = await session.prompt_async(
                prompt, placeholder=FormattedText([("fg:ansibrightblack", placeholder)]))
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            if not session.default_buffer.text:
                print("\nUse Ctrl + d or /bye to exit.")
            use_alt, multiline = False, None
            text.clear()
            continue

        if multiline is not None:
            before, ended = (line[:-3], True) if line.endswith('"""') else (line, False)
            text.append(before)
            if not ended:
                text.append("\n")
                use_alt = True
                continue
            if multiline == "system":
                _set_system(opts, "".join(text))
                print("Set system message.")
                text.clear()
            multiline, use_alt = None, False
        elif line.startswith('"""'):
            rest = line[3:]
            ended = rest.endswith('"""')
            text.append(rest[:-3] if ended else rest)
            if not ended:
                text.append("\n")
                multiline, use_alt = "prompt", True
        elif line.startswith("/list"):
            await _list(client, line.split()[1:])
            continue
        elif line.startswith("/load"):
            await _load(client, opts, line.split())
            continue
        elif line.startswith("/save"):
            await _save(client, opts, line.split())
            continue
        elif line.startswith("/clear"):
            opts.messages = [{"role": "system", "content": opts.system}] if opts.system else []
            print("Cleared session context")
            continue
        elif line.startswith("/set"):
            args = line.split()
            if len(args) < 2:
                _err(USAGE_SET)
                continue
            if args[1] == "system" and len(args) > 2:
                value = " ".join(args[2:])
                if value.startswith('"""'):
                    value = value[3:]
                    if value.endswith('"""') and len(value) >= 3:
                        value = value[:-3]
                    else:
                        text.append(value + "\n")
                        multiline, use_alt = "system", True
                        continue
                _set_system(opts, value)
                print("Set system message.")
                continue
            _set(opts, args, history)
            continue
        elif line.startswith("/show"):
            await _show(client, opts, line.split())
            continue
        elif line.startswith(("/help", "/?")):
            args = line.split()
            topic = args[1] if len(args) > 1 else ""
            if not topic:
                _err(USAGE)
            elif topic in ("set", "/set"):
                _err(USAGE_SET)
            elif topic in ("show", "/show"):
                _err(USAGE_SHOW)
            elif topic in ("shortcut", "shortcuts"):
                _err(USAGE_SHORTCUTS)
            continue
        elif line.startswith(("/exit", "/bye")):
            return 0
        elif line.startswith("/"):
            print(f"Unknown command '{line.split()[0]}'. Type /? for help")
            continue
        else:
            text.append(line)

        if text and multiline is None:
            message = "".join(text)
            text.clear()
            if message:
                await _chat(client, opts, message)


def _set_system(opts: RunOptions, value: str) -> None:
    opts.system = value
    message = {"role": "system", "content": value}
    if opts.messages and opts.messages[-1].get("role") == "system":
        opts.messages[-1] = message
    else:
        opts.messages.append(message)


async def _chat(client: Client, opts: RunOptions, content: str) -> None:
    message: dict[str, Any] = {"role": "user", "content": content}
    if opts.multimodal:
        message["content"], images = extract_images(content)
        if images:
            message["images"] = images
    opts.messages.append(message)
    body = request_body(opts, messages=opts.messages)
    answer = Answer()
    try:
        interrupted, _ = await cancellable(
            stream_answer(client.chat(body), opts, chat=True, answer=answer))
    except CLIError as exc:
        opts.messages.pop()  # the question goes unanswered; keep the conversation consistent
        if isinstance(exc, APIError) or "does not support" in str(exc):
            print(f"Error: {exc}", file=sys.stderr)
            return
        raise
    if interrupted:
        print()
        opts.messages.pop()  # stopped answers are dropped, with their question
        return
    print("\n")
    if opts.verbose:
        _err(metrics_summary(answer.last))
    opts.messages.append({"role": answer.role or "assistant", "content": answer.content})


# `/set <mode>` switches that only print "Set '<mode>' mode.": the option and its value.
_MODES = {"wordwrap": ("word_wrap", True), "nowordwrap": ("word_wrap", False),
          "verbose": ("verbose", True), "quiet": ("verbose", False)}


def _set(opts: RunOptions, args: list[str], history: _SwitchableHistory) -> None:
    what = args[1]
    if what == "history":
        history.enabled = True
    elif what == "nohistory":
        history.enabled = False
    elif what in _MODES:
        field, value = _MODES[what]
        setattr(opts, field, value)
        print(f"Set '{what}' mode.")
    elif what == "think":
        level = args[2] if len(args) > 2 else ""
        opts.think = level or True
        print(f"Set 'think' mode to '{level}'." if level else "Set 'think' mode.")
    elif what == "nothink":
        opts.think = False
        print("Set 'nothink' mode.")
    elif what == "format":
        if len(args) < 3 or args[2] != "json":
            print("Invalid or missing format. For 'json' mode use '/set format json'")
        else:
            opts.format = "json"
            print("Set format to 'json' mode.")
    elif what == "noformat":
        opts.format = ""
        print("Disabled format.")
    elif what == "parameter":
        if len(args) < 4:
            _err(USAGE_PARAMETERS)
            return
        name, values = args[2], args[3:]
        try:
            opts.options[name] = parse_parameter(name, values)
        except ParameterError as exc:
            print(f'Couldn\'t set parameter: "{exc}"')
            return
        print(f"Set parameter '{name}' to '{', '.join(values)}'")
    elif what == "system":
        _err(USAGE_SET)
    else:
        print(f"Unknown command '/set {what}'. Type /? for help")


async def _show(client: Client, opts: RunOptions, args: list[str]) -> None:
    if len(args) < 2:
        _err(USAGE_SHOW)
        return
    extra: dict[str, Any] = {}
    if opts.system:
        extra["system"] = opts.system
    if opts.options:
        extra["options"] = opts.options
    try:
        resp = await client.show(opts.model, **extra)
    except APIError as exc:
        print(f"error: couldn't get model: {exc}")
        return
    what = args[1]
    if what == "info":
        _err(show_info(resp))
    elif what == "license":
        print(resp.get("license") or "No license was specified for this model.")
    elif what == "modelfile":
        print(resp.get("modelfile", ""))
    elif what == "parameters":
        print("Model defined parameters:")
        params = resp.get("parameters") or ""
        if not params:
            print("  No additional parameters were specified for this model.")
        else:
            for line in params.split("\n"):
                print(f"  {line}")
        print()
        if opts.options:
            print("User defined parameters:")
            for key, value in opts.options.items():
                print(f"  {key:<30} {go_value(value)}")
            print()
    elif what == "system":
        if opts.system:
            print(opts.system + "\n")
        elif resp.get("system"):
            print(resp["system"] + "\n")
        else:
            print("No system message was specified for this model.")
    elif what == "template":
        print(resp.get("template") or "No prompt template was specified for this model.")
    else:
        print(f"Unknown command '/show {what}'. Type /? for help")


async def _list(client: Client, args: list[str]) -> None:
    from cli.format import human_bytes, human_time  # noqa: PLC0415

    prefix = args[0].lower() if args else ""
    models = await client.list()
    rows = [[m.get("name", ""), str(m.get("digest", ""))[:12], human_bytes(m.get("size") or 0),
             human_time(m.get("modified_at"), "Never")]
            for m in models if str(m.get("name", "")).lower().startswith(prefix)]
    sys.stdout.write(table(rows, header=["NAME", "ID", "SIZE", "MODIFIED"]))


async def _load(client: Client, opts: RunOptions, args: list[str]) -> None:
    if len(args) != 2:
        print("Usage:\n  /load <modelname>")
        return
    name = args[1]
    print(f"Loading model '{name}'")
    try:
        info = await client.show(name)
        trial = RunOptions(model=name, keep_alive=opts.keep_alive, think=opts.think)
        await load_model(client, trial)
    except APIError as exc:
        if "not found" in str(exc).lower():
            print(f"Couldn't find model '{name}'")
            return
        print(f"error: {exc}")
        return
    opts.model = name
    opts.messages = []
    opts.parent_model = str((info.get("details") or {}).get("parent_model") or "")
    opts.loaded_messages = list(info.get("messages") or [])


async def _save(client: Client, opts: RunOptions, args: list[str]) -> None:
    if len(args) != 2:
        print("Usage:\n  /save <modelname>")
        return
    # From the running model itself: the server keeps its layers and replaces the ones set here
    # (the messages are the model's own plus this session's, so nothing is lost or doubled).
    body: dict[str, Any] = {"model": args[1], "from": opts.model}
    if opts.system:
        body["system"] = opts.system
    if opts.options:
        body["parameters"] = opts.options
    messages = opts.loaded_messages + opts.messages
    if messages:
        body["messages"] = messages
    try:
        async with aclosing(client.create(body)) as statuses:
            async for _ in statuses:
                pass
    except APIError as exc:
        print(f"error: {exc}")
        return
    print(f"Created new model '{args[1]}'")
