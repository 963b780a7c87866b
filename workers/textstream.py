"""Token bytes -> text a client may see: whole UTF-8 characters, and no partial stop string.

A character can be split across tokens, so bytes go through an incremental decoder that holds
an incomplete sequence back. A stop string can be split too, so text that could still turn into
one stays held until it either does (then it and everything after it is dropped) or cannot.

Stops are matched as the text arrives, each character once, by one automaton over all of them
(Aho-Corasick): its state is the longest tail of the text that begins some stop, which is also
exactly what must be held back. Rescanning the held text for every stop on every token was
quadratic: 63 long stops that the output kept almost matching slowed every stream on the worker.
"""

from __future__ import annotations

import codecs
from collections import deque
from dataclasses import dataclass, field


@dataclass
class _Node:
    depth: int  # characters of the stop prefix this node spells
    next: dict[str, int] = field(default_factory=dict)
    fail: int = 0  # the node of the longest proper suffix that is also a stop prefix
    ends: int = 0  # the longest stop ending here (itself or via `fail`), 0 if none


class _Stops:
    """An Aho-Corasick automaton over the stop strings."""

    def __init__(self, stops: list[str]) -> None:
        self.nodes = [_Node(0)]
        for stop in stops:
            node = 0
            for char in stop:
                child = self.nodes[node].next.get(char)
                if child is None:
                    child = len(self.nodes)
                    self.nodes[node].next[char] = child
                    self.nodes.append(_Node(self.nodes[node].depth + 1))
                node = child
            self.nodes[node].ends = len(stop)
        queue = deque(self.nodes[0].next.values())
        while queue:  # breadth first: a node's fail link is shallower, so already done
            node = queue.popleft()
            for char, child in self.nodes[node].next.items():
                fail = self.nodes[node].fail
                while fail and char not in self.nodes[fail].next:
                    fail = self.nodes[fail].fail
                target = self.nodes[fail].next.get(char, 0)
                self.nodes[child].fail = target if target != child else 0
                self.nodes[child].ends = self.nodes[child].ends or self.nodes[
                    self.nodes[child].fail].ends
                queue.append(child)

    def step(self, node: int, char: str) -> int:
        while node and char not in self.nodes[node].next:
            node = self.nodes[node].fail
        return self.nodes[node].next.get(char, 0)


class TextStream:
    def __init__(self, stops: list[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = [s for s in stops if s]
        self._stops = _Stops(stops) if stops else None
        self._state = 0
        self._held = ""  # the tail that may still become a stop
        self.matched = ""  # the stop string that ended the text, once one has

    @property
    def stopped(self) -> bool:
        return bool(self.matched)

    def push(self, data: bytes) -> str:
        """Feeds one token's bytes; returns the text now safe to emit. Sets `stopped` on a stop."""
        text = self._decoder.decode(data)
        if self._stops is None:
            return text
        pending = self._held + text
        offset = len(self._held)  # where `text` starts in `pending`
        for i, char in enumerate(text):
            self._state = self._stops.step(self._state, char)
            length = self._stops.nodes[self._state].ends
            if length:
                self.matched = pending[offset + i + 1 - length:offset + i + 1]
                self._held = ""
                return pending[:offset + i + 1 - length]
        held = self._stops.nodes[self._state].depth
        self._held = pending[len(pending) - held:] if held else ""
        return pending[:len(pending) - held]

    def flush(self) -> str:
        """What is left when generation ends for another reason than a stop string."""
        out = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return out
