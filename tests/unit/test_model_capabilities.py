"""What /api/show lists as a model's capabilities, from its metadata and template."""

from __future__ import annotations

from store.model import capabilities

GEMMA = {"general.architecture": "gemma3"}


def test_a_generative_model_with_a_plain_template_only_completes() -> None:
    assert capabilities("{{ .Prompt }}", GEMMA, thinking=False) == ["completion"]


def test_an_embedding_model_is_known_by_its_pooling_type() -> None:
    bert = {"general.architecture": "bert", "bert.pooling_type": 1}
    assert capabilities("", bert, thinking=False) == ["embedding"]


def test_template_variables_add_tools_and_insert() -> None:
    assert capabilities("{{ .Tools }}{{ .Suffix }}", GEMMA, thinking=False) == [
        "completion", "tools", "insert"]


def test_a_template_that_marks_out_thinking_adds_thinking() -> None:
    assert capabilities("", GEMMA, thinking=True) == ["completion", "thinking"]


def test_a_vision_tower_adds_vision() -> None:
    meta = {**GEMMA, "gemma3.vision.block_count": 27}
    assert capabilities("", meta, thinking=False) == ["completion", "vision"]
