"""Which of our named templates fits a GGUF's Jinja chat template (`tokenizer.chat_template`).

Each prompt format has tokens or labels no other format uses; the rules look for those in the
Jinja source, most specific format first (Gemma 3 before Gemma, Llama 2's `<<SYS>>` before
Mistral's plain `[INST]`, Alpaca's `### Instruction:` before StarCoder2's `### Instruction`, and
the generic "User:"/"Assistant:" labels last). Nothing is rendered and nothing is compared by
edit distance, so the answer does not depend on a model's system prompt or other boilerplate.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    name: str
    all_of: tuple[str, ...]          # every one of these must appear
    any_of: tuple[str, ...] = ()     # and, if given, at least one of these
    none_of: tuple[str, ...] = ()    # and none of these

    def matches(self, text: str) -> bool:
        return (all(m in text for m in self.all_of)
                and (not self.any_of or any(m in text for m in self.any_of))
                and not any(m in text for m in self.none_of))


RULES: tuple[Rule, ...] = (
    Rule("command-r", ("<|START_OF_TURN_TOKEN|>",)),
    # Gemma 3 folds the system prompt into the first user turn and knows images; Gemma 1 and 2
    # templates refuse a system role.
    Rule("gemma3-instruct", ("<start_of_turn>",), any_of=("<start_of_image>", "first_user_prefix")),
    Rule("gemma-instruct", ("<start_of_turn>",)),
    Rule("llama3-instruct", ("<|start_header_id|>", "<|end_header_id|>")),
    Rule("chatml", ("<|im_start|>",)),
    Rule("openchat", ("GPT4 Correct",)),
    Rule("alfred", ("<end_message>",), any_of=("<start_user>", "<start_assistant>")),
    Rule("codellama-70b-instruct", ("Source: ", "<step>")),
    Rule("phi-3", ("<|end|>",), any_of=("<|user|>", "<|assistant|>"), none_of=("[gMASK]",)),
    Rule("zephyr", (), any_of=("<|user|>", "<|assistant|>"), none_of=("[gMASK]",)),
    Rule("llama2-chat", ("[INST]", "<<SYS>>")),
    Rule("mistral-instruct", ("[INST]",)),
    Rule("magicoder", ("@@ Instruction",)),
    Rule("alpaca", ("### Instruction:",)),
    Rule("starcoder2-instruct", ("### Instruction",)),
    Rule("solar-instruct", (), any_of=("### User:", "### Assistant:")),
    Rule("granite-instruct", ("Question:", "Answer:")),
    Rule("falcon-instruct", ("Falcon:",)),
    Rule("vicuna", ("USER:", "ASSISTANT:")),
    Rule("chatqa", ("User:", "Assistant:")),
)


def match_template(jinja: str) -> str | None:
    """The name of our template for this Jinja chat template, or None when no rule fits."""
    if not jinja or not jinja.strip():
        return None
    for rule in RULES:
        if rule.matches(jinja):
            return rule.name
    return None
