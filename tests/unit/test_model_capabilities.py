"""What /api/show lists as a model's capabilities, from its metadata and template."""

from __future__ import annotations

from store.model import capabilities

GEMMA = {"general.architecture": "gemma3"}


def test_a_generative_model_with_a_plain_template_only_completes() -> None:
    assert capabilities("{{ .Prompt }}", GEMMA) == ["completion"]


def test_an_embedding_model_is_known_by_its_pooling_type() -> None:
    bert = {"general.architecture": "bert", "bert.pooling_type": 1}
    assert capabilities("", bert) == ["embedding"]


def test_template_variables_add_tools_and_insert() -> None:
    assert capabilities("{{ .Tools }}{{ .Suffix }}", GEMMA) == [
        "completion", "tools", "insert"]


THINKING = "{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ end }}"


def test_a_template_that_marks_out_thinking_adds_thinking() -> None:
    assert capabilities(THINKING, GEMMA) == ["completion", "thinking"]


def test_tools_mentioned_only_in_text_are_no_capability() -> None:
    assert capabilities("Use .Tools wisely: {{ .Prompt }}", GEMMA) == ["completion"]


def test_a_vision_tower_adds_vision() -> None:
    meta = {**GEMMA, "gemma3.vision.block_count": 27}
    assert capabilities("", meta) == ["completion", "vision"]


def test_a_projector_adds_vision_before_what_the_template_adds() -> None:
    assert capabilities("{{ .Tools }}", GEMMA, projector=True) == ["completion", "vision", "tools"]
