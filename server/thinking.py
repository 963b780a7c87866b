"""Thinking traces in streamed model output, split off the way Ollama does it.

Ollama (`thinking/parser.go`, used by `server/routes.go` ChatHandler and GenerateHandler for
models without a built-in parser): with `think: true` on a model whose template marks out
thinking (the tags come from workers/template/analysis.py), the generated text is fed through a
small state machine: whitespace before the opening tag is dropped; any other text before it
means the model is not thinking and everything passes through as content untouched; whitespace
just after the opening and just after the closing tag is dropped; a tag split across chunks is
held back until it is decided. Only the first `<think>...</think>` block is thinking. When the
prompt ended with the opening tag (the template prefilled it; the worker says so), the parser
is fed the opening tag before the first chunk.
"""

from __future__ import annotations

from workers.template.analysis import DEFAULT_THINKING_TAGS, analyze, go_lstrip, go_strip

# States, as in Ollama's thinking.Parser.
_LOOKING_FOR_OPENING = 0  # no non-whitespace seen yet
_STARTED_EATING_WHITESPACE = 1  # opening tag seen, dropping whitespace after it
_THINKING = 2
_DONE_EATING_WHITESPACE = 3  # closing tag seen, dropping whitespace after it
_DONE = 4


class ThinkingParser:
    """Splits streamed model text into (thinking, content)."""

    def __init__(self, opening_tag: str = DEFAULT_THINKING_TAGS[0],
                 closing_tag: str = DEFAULT_THINKING_TAGS[1]) -> None:
        if not opening_tag or not closing_tag:
            raise ValueError("thinking tags must not be empty")
        self.opening_tag = opening_tag
        self.closing_tag = closing_tag
        self._state = _LOOKING_FOR_OPENING
        self._acc = ""

    @classmethod
    def from_template(cls, template: str | None) -> ThinkingParser:
        """A parser with the tags inferred from `template`, `<think>`/`</think>` when none are."""
        info = analyze(template)
        return cls(*(info.thinking_tags if info.thinking else DEFAULT_THINKING_TAGS))

    def opened(self) -> None:
        """The prompt ended with the opening tag: what comes first is thinking."""
        self.feed(self.opening_tag)

    @property
    def thinking_done(self) -> bool:
        """True once the text is known to be past (or without) the thinking block."""
        return self._state in (_DONE_EATING_WHITESPACE, _DONE)

    def feed(self, text: str) -> tuple[str, str]:
        """(thinking, content) that can be sent now; text that may still turn out to be a tag
        is held back."""
        self._acc += text
        thinking: list[str] = []
        content: list[str] = []
        more = True
        while more:
            t, c, more = self._eat()
            thinking.append(t)
            content.append(c)
        return "".join(thinking), "".join(content)

    def finish(self) -> tuple[str, str]:
        """(thinking, content) still held back when generation ends: a partial tag that never
        completed is released as what it was inside of. Leading whitespace stays dropped."""
        acc, self._acc = self._acc, ""
        if self._state == _THINKING:
            return acc, ""
        if self._state == _LOOKING_FOR_OPENING:
            return "", acc if go_strip(acc) else ""
        if self._state == _DONE:
            return "", acc
        return "", ""

    def _eat(self) -> tuple[str, str, bool]:
        """One step of the state machine: (thinking, content, keep going)."""
        state = self._state
        if state == _LOOKING_FOR_OPENING:
            trimmed = go_lstrip(self._acc)
            if trimmed.startswith(self.opening_tag):
                after = go_lstrip(trimmed[len(self.opening_tag):])
                self._acc = after
                self._state = _THINKING if after else _STARTED_EATING_WHITESPACE
                return "", "", True
            if self.opening_tag.startswith(trimmed):
                return "", "", False  # whitespace or a partial opening tag: wait for more
            # Text before any opening tag: no thinking; the content keeps its whitespace.
            self._state = _DONE
            acc, self._acc = self._acc, ""
            return "", acc, False
        if state == _STARTED_EATING_WHITESPACE:
            trimmed = go_lstrip(self._acc)
            self._acc = ""
            if not trimmed:
                return "", "", False
            self._state = _THINKING
            self._acc = trimmed
            return "", "", True
        if state == _THINKING:
            acc = self._acc
            i = acc.find(self.closing_tag)
            if i >= 0:
                thinking = acc[:i]
                remaining = go_lstrip(acc[i + len(self.closing_tag):])
                self._acc = ""
                self._state = _DONE if remaining else _DONE_EATING_WHITESPACE
                return thinking, remaining, False
            held = _overlap(acc, self.closing_tag)
            self._acc = acc[len(acc) - held:] if held else ""
            return acc[:len(acc) - held], "", False
        if state == _DONE_EATING_WHITESPACE:
            trimmed = go_lstrip(self._acc)
            self._acc = ""
            if trimmed:
                self._state = _DONE
            return "", trimmed, False
        acc, self._acc = self._acc, ""
        return "", acc, False


def _overlap(text: str, delim: str) -> int:
    """Length of the longest suffix of `text` that is a proper-or-whole prefix of `delim`."""
    for n in range(min(len(delim), len(text)), 0, -1):
        if text.endswith(delim[:n]):
            return n
    return 0
