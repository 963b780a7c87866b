"""A disk that fills up, for tests (a small tmpfs would need root): `os.pwritev` writes `room`
bytes more, the last of them in a short write, then fails with ENOSPC."""

from __future__ import annotations

import errno
import os

import pytest


def fill_disk_after(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    def pwritev(fd: int, buffers: list[memoryview], offset: int) -> int:
        nonlocal room
        if not room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = os.pwrite(fd, b"".join(buffers)[:room], offset)
        room -= written
        return written

    monkeypatch.setattr(os, "pwritev", pwritev)
