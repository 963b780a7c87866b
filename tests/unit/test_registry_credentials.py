"""Which token realm may be sent a registry's credentials (store/registry.py): its own host and
port, or another host over https; never another host over plain http."""

from __future__ import annotations

import pytest
from yarl import URL

from store.registry import _may_have_credentials

REGISTRY = URL("http://127.0.0.1:5000").origin()


@pytest.mark.parametrize("realm", ["http://127.0.0.1:5000/token",
                                   "https://auth.example/token"])  # Docker Hub's kind
def test_the_registrys_own_host_or_https_gets_the_credentials(realm: str) -> None:
    assert _may_have_credentials(REGISTRY, URL(realm))


@pytest.mark.parametrize("realm", ["http://127.0.0.2:5000/token",  # another host
                                   "http://127.0.0.1:5001/token"])  # another port, another server
def test_another_host_over_plain_http_gets_none(realm: str) -> None:
    assert not _may_have_credentials(REGISTRY, URL(realm))
