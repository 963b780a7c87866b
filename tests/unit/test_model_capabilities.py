"""What /api/show lists as a model's capabilities, from its metadata and template."""

from __future__ import annotations

from store.model import capabilities

GEMMA = {"general.architecture": "gemma3"}


def test_a_generative_model_with_a_plain_template_only_completes() -> None:
    assert capabilities("{{ .Prompt }}", GEMMA) == ["completion"]


def test_an_embedding_model_is_known_by_its_pooling_type() -> None:
    assert capabilities("", {"general.architecture": "bert", "bert.pooling_type": 1}) == ["embedding"]


def test_template_variables_add_tools_insert_and_thinking() -> None:
    template = "{{ .Tools }}{{ .Suffix }}{{ if .Think }}{{ end }}"
    assert capabilities(template, GEMMA) == ["completion", "tools", "insert", "thinking"]


def test_a_vision_tower_adds_vision() -> None:
    meta = {**GEMMA, "gemma3.vision.block_count": 27}
    assert capabilities("", meta) == ["completion", "vision"]
