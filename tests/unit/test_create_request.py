"""The /api/create request as Ollama's api.CreateRequest (0.33) reads it."""

from __future__ import annotations

import pytest

from server import errors
from server.schemas import CreateRequest


def test_quantization_is_the_older_spelling_of_quantize() -> None:
    spec = CreateRequest.parse({"model": "m", "from": "x", "quantization": "q8_0"}).spec
    assert spec.quantize == "q8_0"
    both = CreateRequest.parse({"model": "m", "from": "x", "quantize": "q4_K_M",
                                "quantization": "q8_0"}).spec
    assert both.quantize == "q4_K_M"  # Ollama's cmp.Or(r.Quantize, r.Quantization)


@pytest.mark.parametrize("field,value", [("renderer", "qwen3-coder"), ("parser", "qwen3"),
                                         ("remote_host", "https://ollama.com"),
                                         ("info", {"capabilities": ["tools"]})])
def test_a_field_corral_cannot_honour_is_a_400_naming_it(field: str, value: object) -> None:
    with pytest.raises(errors.BadRequest, match=f'"{field}" is not supported'):
        CreateRequest.parse({"model": "m", "from": "x", field: value})


def test_an_empty_field_is_taken_as_absent() -> None:
    spec = CreateRequest.parse({"model": "m", "from": "x", "renderer": "", "info": {}}).spec
    assert spec.from_ == "x"
