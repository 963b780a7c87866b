"""Model name parsing: Ollama's defaults, display form, and what is refused."""

from __future__ import annotations

import pytest

from store.errors import InvalidName
from store.names import ModelName, parse_name


def test_bare_name_gets_default_host_namespace_and_tag() -> None:
    assert parse_name("gemma3") == ModelName("registry.ollama.ai", "library", "gemma3", "latest")


def test_tag_namespace_and_host_are_read() -> None:
    assert parse_name("example.com:5000/team/model:q4") == ModelName(
        "example.com:5000", "team", "model", "q4")


def test_display_drops_defaults_only() -> None:
    assert parse_name("gemma3:270m").display == "gemma3:270m"
    assert parse_name("me/model").display == "me/model:latest"
    assert parse_name("h.io/me/model:1").display == "h.io/me/model:1"


@pytest.mark.parametrize("bad", ["", " ", "../x", "a/../b", "a/b/c/d", "model:", ":tag",
                                 "mo del", "x/.hidden", "a:b:c/d", "model:../../etc"])
def test_invalid_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidName):
        parse_name(bad)


def test_parts_are_the_manifest_path_components() -> None:
    assert parse_name("gemma3:270m").parts == ("registry.ollama.ai", "library", "gemma3", "270m")
