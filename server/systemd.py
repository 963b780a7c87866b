"""Telling systemd how the service is doing (`Type=notify`): READY=1 once the port is bound and
the workers are up, STOPPING=1 when shutdown begins. The protocol is one datagram on the unix
socket named in NOTIFY_SOCKET (a leading `@` means the abstract namespace); without that
variable, as outside systemd, nothing is sent."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("corral")


def notify(state: str) -> bool:
    """Sends `state` (e.g. "READY=1"); True if it was delivered."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", state, exc)
        return False
    return True
