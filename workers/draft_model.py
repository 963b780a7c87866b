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
            rc = self._decode(0, [llama.llama_vocab_bos(self.vocab)], 0)
            # A draft that cannot decode is never worth its cost.
            self.token_cost = time.perf_counter() - start if rc == 0 else math.inf
            self._memory.clear()
        self._held.clear()

    def draft(self, slot: int, tokens: list[int], count: int) -> list[int]:
        """Up to `count` greedy guesses at what follows `tokens` (a sequence's history, its
        pending token last); [] while the draft catches up with a long history, or if it
        cannot decode it."""
        for _ in range(2):
            guesses = self._draft(slot, tokens, count)
            if guesses is not None:
                return guesses
            self._memory.clear(data=False)  # no room: drop every slot's cache, once
            self._held.clear()
        return []

    def _draft(self, slot: int, tokens: list[int], count: int) -> list[int] | None:
        """The guesses; None if a decode found no room."""
        held = self._held.get(slot, [])
        keep = min(len(held), len(tokens) - 1)  # the last token is decoded again for its logits
        if held[:keep] != tokens[:keep]:  # (compared whole first: a list compare is C)
            keep = next(i for i, (a, b) in enumerate(zip(held, tokens)) if a != b)
        if not self._memory.remove(slot, keep):
            keep = 0  # a model that cannot cut its state (recurrent) starts the slot over
            self._memory.remove(slot)
        self._held[slot] = held = tokens[:keep]
        new = tokens[keep:keep + CATCH_UP]
        if any(not 0 <= token < self.n_vocab for token in new):
            return []  # a token the draft does not know (the model's vocabulary is larger)
        guesses: list[int] = []
        while len(guesses) < count:
            for start in range(0, len(new), self._batch_tokens):
                chunk = new[start:start + self._batch_tokens]
                rc = self._decode(slot, chunk, len(held))
                if rc != 0:
                    if rc == 1:
                        return None
                    self._memory.remove(slot)
                    self._held.pop(slot, None)
                    return []
                held += chunk
            if len(held) < len(tokens) + len(guesses):
                return []  # still catching up: guesses from the next step on
            guess = int(np.ctypeslib.as_array(llama.llama_get_logits_ith(self.ctx, -1),
                                              shape=(self.n_vocab,)).argmax())
            if guess >= self._usable:  # a padding token of a larger vocabulary
                break
            guesses.append(guess)
            new = [guess]
        return guesses

    def _decode(self, slot: int, tokens: list[int], pos: int) -> int:
        """Decodes the tokens at `pos` on, logits for the last only: llama_decode's code."""
        batch = self._batch
        for k, token in enumerate(tokens):
            batch.token[k], batch.pos[k], batch.n_seq_id[k] = token, pos + k, 1
            batch.seq_id[k][0], batch.logits[k] = slot, k == len(tokens) - 1
        batch.n_tokens = len(tokens)
        return int(llama.llama_decode(self.ctx, batch))

    def close(self) -> None:
        llama.llama_batch_free(self._batch)
        llama.llama_free(self.ctx)
        llama.llama_model_free(self.model)
