"""Token bytes -> text a client may see: whole UTF-8 characters, and no partial stop string.

A character can be split across tokens, so bytes go through an incremental decoder that holds
an incomplete sequence back. A stop string can be split too, so text that could still turn into
one stays held until it either does (then it and everything after it is dropped) or cannot.
"""

from __future__ import annotations

import codecs


class TextStream:
    def __init__(self, stops: list[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = [s for s in stops if s]
        self._pending = ""
        self.stopped = False

    def push(self, data: bytes) -> str:
        """Feeds one token's bytes; returns the text now safe to emit. Sets `stopped` on a stop."""
        self._pending += self._decoder.decode(data)
        if not self._stops:
            out, self._pending = self._pending, ""
            return out
        cut = min((i for i in (self._pending.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self._pending = self._pending[:cut], ""
            return out
        hold = self._held_suffix()
        out = self._pending[: len(self._pending) - hold]
        self._pending = self._pending[len(self._pending) - hold:]
        return out

    def flush(self) -> str:
        """What is left when generation ends for another reason than a stop string."""
        out = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return out

    def _held_suffix(self) -> int:
        """Length of the longest tail of the pending text that begins some stop string."""
        text = self._pending
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
