"""Times as Ollama's API writes them (`created_at`, `modified_at`, `expires_at`)."""

from __future__ import annotations

from datetime import datetime, timezone


def rfc3339(when: datetime) -> str:
    """A UTC time as Ollama writes it (RFC 3339 with a Z)."""
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def now_rfc3339() -> str:
    return rfc3339(datetime.now(timezone.utc))
