"""A draft model: a smaller model of the same vocabulary, whose greedy guesses at a sequence's
next tokens the batcher verifies in its one decode (speculation.py), as llama.cpp's speculative
decoding with a draft model does (common/speculative.cpp), here for every sequence of the batch.

The draft model has a context of its own, with a sequence for each slot of the model's. A draft
starts from what that context already holds of the sequence: the longest common prefix with the
sequence's tokens stays (so a rejected guess, or a new request on the slot that shares a system
prompt, costs only what differs), the rest of its cells go, the missing tokens are decoded (a
prompt in batch-sized chunks, at most CATCH_UP tokens a step so that a long prompt never stalls
the batch for one decode of the draft's: until it has caught up, the sequence has no guesses),
then each guess is the argmax of the logits (llama.cpp's draft sampler is greedy) and is decoded
for the next. A decode that finds no room clears the whole context once (what other slots held is
only a cache) and tries again; any other failure (a token the draft's vocabulary lacks) ends that
sequence's guesses for the step and drops what its slot held.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import llama_cpp as llama
import numpy as np

from workers.kvcache import LlamaMemory

CATCH_UP = 512  # history tokens a sequence's draft decodes in one step at most
# llama.cpp's SPEC_VOCAB_CHECK_START_TOKEN_ID and SPEC_VOCAB_MAX_SIZE_DIFFERENCE.
CHECK_FROM_TOKEN = 5
VOCAB_SLACK = 128
# Token texts compared at load beyond the first CHECKED_HEAD: every VOCAB_STRIDE-th, since each is
# a ctypes call (all 262k of Gemma's would add a quarter of a second to every load).
CHECKED_HEAD, VOCAB_STRIDE = 4096, 61


@dataclass(frozen=True, slots=True)
class _Row:
    """One token of a draft decode: whose (the ask's index and slot), where, and whether its
    logits are read (a sequence's last known token, or its last guess)."""

    ask: int
    slot: int
    token: int
    pos: int
    logits: bool


class DraftModel:
    def __init__(self, model: llama.llama_model_p, ctx: llama.llama_context_p,
                 batch_tokens: int) -> None:
        self.model = model
        self.ctx = ctx
        self.vocab = llama.llama_model_get_vocab(model)
        self.n_vocab = llama.llama_vocab_n_tokens(self.vocab)
        self._memory = LlamaMemory(ctx)
        self._batch_tokens = batch_tokens
        self._batch = llama.llama_batch_init(batch_tokens, 0, 1)
        self._held: dict[int, list[int]] = {}  # slot -> the tokens its cells hold, in order
        self._usable = self.n_vocab  # guesses past the model's vocabulary end a draft
        self.token_cost = 0.0  # seconds one single-token decode takes (`calibrate`)

    def mismatch(self, target_vocab: llama.llama_vocab_p) -> str:
        """Why the draft cannot draft for a model of `target_vocab` ("" if it can): llama.cpp's
        common_speculative_are_compatible, with the token texts sampled."""
        vocab, n_target = self.vocab, llama.llama_vocab_n_tokens(target_vocab)
        if llama.llama_vocab_type(vocab) != llama.llama_vocab_type(target_vocab):
            return "its tokenizer differs"
        if abs(self.n_vocab - n_target) > VOCAB_SLACK:
            return f"its vocabulary has {self.n_vocab} tokens, the model's {n_target}"
        for special in (llama.llama_vocab_bos, llama.llama_vocab_eos):
            if special(vocab) != special(target_vocab):
                return "its BOS or EOS token differs"
        n = self._usable = min(self.n_vocab, n_target)
        for token in [*range(CHECK_FROM_TOKEN, min(n, CHECKED_HEAD)),
                      *range(CHECKED_HEAD, n, VOCAB_STRIDE)]:
            if llama.llama_vocab_get_text(vocab, token) != llama.llama_vocab_get_text(
                    target_vocab, token):
                return f"its token {token} differs"
        return ""

    def calibrate(self) -> None:
        """Times a single-token decode (after one to warm up) in the empty context: what a
        drafted token costs."""
        for _ in range(2):
            start = time.perf_counter()
            decoded = self._decode([_Row(0, 0, llama.llama_vocab_bos(self.vocab), 0, True)])
            # A draft that cannot decode is never worth its cost.
            self.token_cost = time.perf_counter() - start if decoded else math.inf
            self._memory.clear()
        self._held.clear()

    def draft(self, slot: int, tokens: list[int], count: int) -> list[int]:
        """One sequence's guesses (see `draft_many`)."""
        return self.draft_many([(slot, tokens, count)])[0]

    def draft_many(self, asks: list[tuple[int, list[int], int]]) -> list[list[int]]:
        """For each (slot, history with its pending token last, count): up to `count` greedy
        guesses at what follows, made together: the histories' new tokens share decodes (one,
        unless they hold more than a batch), then one decode a guess position serves every
        sequence still guessing. [] for a sequence still catching up with a long history or
        holding a token the draft does not know; [] for all when a decode fails (a full
        context: what every slot held goes, it is only a cache)."""
        guesses: list[list[int]] = [[] for _ in asks]
        rows: list[_Row] = []
        for i, (slot, tokens, count) in enumerate(asks):
            new = self._sync(slot, tokens)
            if new and count > 0:
                start, last = len(self._held[slot]), len(new) - 1
                caught_up = start + len(new) == len(tokens)
                rows += [_Row(i, slot, token, start + k, caught_up and k == last)
                         for k, token in enumerate(new)]
        while rows:
            for start in range(0, len(rows), self._batch_tokens):
                chunk = rows[start:start + self._batch_tokens]
                if not self._decode(chunk):
                    self._memory.clear()
                    self._held.clear()
                    return [[] for _ in asks]
                for k, row in enumerate(chunk):
                    self._held[row.slot].append(row.token)
                    if row.logits:
                        guesses[row.ask].append(self._argmax(k))
            rows = [_Row(i, slot, said[-1], len(self._held[slot]), True)
                    for i, ((slot, _, count), said) in enumerate(zip(asks, guesses))
                    if 0 < len(said) < count and said[-1] < self._usable]
        # A guess past the model's vocabulary (a larger one's padding) ends a sequence's draft.
        return [said[:next((k for k, t in enumerate(said) if t >= self._usable), len(said))]
                for said in guesses]

    def _sync(self, slot: int, tokens: list[int]) -> list[int] | None:
        """Cuts what the slot holds back to its common prefix with `tokens` and returns what
        it must decode next (at most CATCH_UP tokens); None for a token the draft does not
        know (the model's vocabulary is larger)."""
        held = self._held.get(slot, [])
        keep = min(len(held), len(tokens) - 1)  # the last token is decoded again for its logits
        if held[:keep] != tokens[:keep]:  # (compared whole first: a list compare is C)
            keep = next(i for i, (a, b) in enumerate(zip(held, tokens)) if a != b)
        if not self._memory.remove(slot, keep):
            keep = 0  # a model that cannot cut its state (recurrent) starts the slot over
            self._memory.remove(slot)
        self._held[slot] = tokens[:keep]
        new = tokens[keep:keep + CATCH_UP]
        return None if any(not 0 <= token < self.n_vocab for token in new) else new

    def _argmax(self, row: int) -> int:
        return int(np.ctypeslib.as_array(llama.llama_get_logits_ith(self.ctx, row),
                                         shape=(self.n_vocab,)).argmax())

    def _decode(self, rows: list[_Row]) -> bool:
        batch = self._batch
        for k, row in enumerate(rows):
            batch.token[k], batch.pos[k], batch.n_seq_id[k] = row.token, row.pos, 1
            batch.seq_id[k][0], batch.logits[k] = row.slot, row.logits
        batch.n_tokens = len(rows)
        return llama.llama_decode(self.ctx, batch) == 0

    def close(self) -> None:
        llama.llama_batch_free(self._batch)
        llama.llama_free(self.ctx)
        llama.llama_model_free(self.model)
