"""A BERT WordPiece tokenizer as Hugging Face's `tokenizers` runs it from a `tokenizer.json`.

The converter needs it for one thing: llama.cpp's converter names the pre-tokenizer it writes
(`tokenizer.ggml.pre`) by hashing the token ids the model's own tokenizer gives for a fixed probe
text, and refuses a tokenizer whose hash it does not know. We compute the same hash without
`transformers`, following the Rust implementation that `AutoTokenizer` loads (`BertNormalizer`,
`BertPreTokenizer`, `WordPiece`, `TemplateProcessing`), down to its character classes.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# CJK ideograph blocks that BertNormalizer surrounds with spaces (the ranges of `tokenizers`,
# including its 0x2B920 start where Unicode says 0x2B820).
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


@dataclass(frozen=True)
class WordPiece:
    vocab: Mapping[str, int]
    unk_token: str = "[UNK]"
    prefix: str = "##"
    max_chars: int = 100
    clean_text: bool = True
    chinese_chars: bool = True
    strip_accents: bool = True
    lowercase: bool = True
    # The ids the post-processor puts around one sequence ([CLS] ... [SEP] for BERT).
    before: tuple[int, ...] = ()
    after: tuple[int, ...] = ()

    @classmethod
    def from_tokenizer_json(cls, tokenizer: Mapping[str, Any]) -> WordPiece:
        """The tokenizer a `tokenizer.json` describes; ValueError if it is not BERT WordPiece."""
        model, normalizer = tokenizer.get("model") or {}, tokenizer.get("normalizer") or {}
        if model.get("type") != "WordPiece":
            raise ValueError(f"tokenizer model is {model.get('type')!r}, not WordPiece")
        if normalizer.get("type") != "BertNormalizer":
            raise ValueError(f"tokenizer normalizer is {normalizer.get('type')!r}, not BertNormalizer")
        if (tokenizer.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer":
            raise ValueError("tokenizer pre-tokenizer is not BertPreTokenizer")
        vocab = dict(model["vocab"])
        for added in tokenizer.get("added_tokens") or []:
            vocab[added["content"]] = added["id"]
        lowercase = normalizer.get("lowercase", True)
        strip_accents = normalizer.get("strip_accents")
        before, after = _single_template(tokenizer.get("post_processor") or {}, vocab)
        return cls(vocab=vocab, unk_token=model.get("unk_token", "[UNK]"),
                   prefix=model.get("continuing_subword_prefix", "##"),
                   max_chars=model.get("max_input_chars_per_word", 100),
                   clean_text=normalizer.get("clean_text", True),
                   chinese_chars=normalizer.get("handle_chinese_chars", True),
                   strip_accents=lowercase if strip_accents is None else strip_accents,
                   lowercase=lowercase, before=before, after=after)

    def encode(self, text: str) -> list[int]:
        """The ids of one sequence with the post-processor's special tokens ([CLS] ... [SEP])."""
        return [*self.before, *(i for word in self.words(text) for i in self.word_ids(word)), *self.after]

    def words(self, text: str) -> list[str]:
        """Normalise, then split on whitespace and around every punctuation character."""
        words: list[str] = []
        current = ""
        for char in self.normalize(text):
            if char.isspace():
                words.append(current)
                current = ""
            elif _is_punctuation(char):
                words += [current, char]
                current = ""
            else:
                current += char
        words.append(current)
        return [word for word in words if word]

    def normalize(self, text: str) -> str:
        if self.clean_text:
            text = "".join(" " if _is_whitespace(c) else c for c in text
                           if not (c in "\0\ufffd" or _is_control(c)))
        if self.chinese_chars:
            text = "".join(f" {c} " if _is_cjk(c) else c for c in text)
        if self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text)
                           if unicodedata.category(c) != "Mn")
        if self.lowercase:
            # Character by character, as `tokenizers` does (no final-sigma rule).
            text = "".join(c.lower() for c in text)
        return text

    def word_ids(self, word: str) -> list[int]:
        """Greedy longest match from the left; a word with any unmatched piece is one [UNK]."""
        unk = [self.vocab[self.unk_token]]
        if len(word) > self.max_chars:
            return unk
        ids: list[int] = []
        start = 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    start = end
                    break
            else:
                return unk
        return ids


def _single_template(processor: Mapping[str, Any],
                     vocab: Mapping[str, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The special ids a post-processor adds before and after a single sequence."""
    kind = processor.get("type")
    if kind == "BertProcessing":
        return (processor["cls"][1],), (processor["sep"][1],)
    if kind == "TemplateProcessing":
        specials = processor.get("special_tokens") or {}
        before: list[int] = []
        after: list[int] = []
        side = before
        for item in processor.get("single") or []:
            if "Sequence" in item:
                side = after
            else:
                name = item["SpecialToken"]["id"]
                side += specials[name]["ids"] if name in specials else [vocab[name]]
        return tuple(before), tuple(after)
    return (), ()


def _is_whitespace(char: str) -> bool:
    return char in "\t\n\r" or char.isspace()


def _is_control(char: str) -> bool:
    # Rust's `is_other`: control, format, private use, surrogate and unassigned code points.
    return char not in "\t\n\r" and unicodedata.category(char) in ("Cc", "Cf", "Co", "Cs", "Cn")


def _is_punctuation(char: str) -> bool:
    # ASCII punctuation includes symbols such as $ + < = > ^ ` | ~, as in `tokenizers`.
    return (char.isascii() and not char.isalnum() and char.isprintable() and not char.isspace()
            or unicodedata.category(char).startswith("P"))


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK)
