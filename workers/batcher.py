"""One loaded model's continuous batch: its sequences, its KV cache and its step costs.

A step is schedule → execute → update, with plain data in between (as vLLM's engine core):
- schedule: shift full contexts, make room, admit waiting sequences (kvcache.py), then decide
  what each sequence adds to the batch (planner.py's `plan_step`, a list of `Work`);
- execute: fill one `llama_batch` with every Work and call `llama_decode` once;
- update: sample each sequence that asked for logits with its own sampler chain (and grammar),
  stream its text, finish it.
A generating sequence may add a draft of its next tokens to the batch and keep what sampling
confirms (speculation.py). A prompt's image is decoded into its sequence's cells on its own,
before the step's batch (one image per step, so running streams wait at most one image between
tokens): a llama_batch takes tokens or embeddings, not both.
New requests join between steps; a finished or cancelled sequence's cells are released before
the next step. The step's new text for every sequence goes out in one Step message.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import llama_cpp as llama

from workers import protocol
from workers.context import Window, predict_limit
from workers.grammar import GrammarDeadEnd
from workers.kvcache import KVCache, LlamaMemory, newest
from workers.llm import LoadedModel
from workers.logprobs import Distribution
from workers.planner import StepCosts, Work, plan_step
from workers.prompt import Built
from workers.render_pool import RenderCrashed, RenderStopped, RenderTimeout
from workers.sampling import Chain
from workers.sequence import Sequence, Status
from workers.speculation import CALIBRATION_SIZES, FREE, MAX_DRAFT, Costs, Drafter, plan_drafts
from workers.textstream import TextStream

log = logging.getLogger("corral.worker")

Send = Callable[[protocol.FromWorker], None]
Offload = Callable[[int, Callable[[], int]], None]  # (job id, a grammar pass) to a side thread


class ModelBatcher:
    def __init__(self, model: LoadedModel, load: protocol.Load, send: Send,
                 offload: Offload) -> None:
        self.model = model
        self._offload = offload
        self.kv = KVCache(LlamaMemory(model.ctx), model.kv_cells, load.slots, model.num_ctx,
                          reuse=not load.batch_invariant)
        self._costs = StepCosts()
        self._send = send
        self._seqs: dict[int, Sequence] = {}  # insertion order is arrival order
        # Cancelled while their grammar pass ran: their samplers go when the pass is over.
        self._orphans: dict[int, Sequence] = {}
        self._texts: list[list[object]] = []  # this step's [job_id, text, tokens]
        # What a decode of n tokens costs here, for weighing drafts; None: no speculation.
        self._decode_costs: Costs | None = None
        self._draft_cost = 0.0  # what a draft token costs to make (a draft model's decode)
        if not load.batch_invariant and load.speculative != "off":
            # always: every draft looks worth it
            self._decode_costs = FREE if load.speculative == "always" else self._calibrate()
            if model.draft is not None and load.speculative != "always":
                model.draft.calibrate()
                self._draft_cost = model.draft.token_cost
        self._finals: list[protocol.FromWorker] = []  # this step's Done, sent after its Step

    def __contains__(self, job_id: int) -> bool:
        return job_id in self._seqs or job_id in self._orphans

    @property
    def has_work(self) -> bool:
        """Whether a step would do something: a sequence to step, or text and endings that a
        grammar pass gave since the last one (sequences still rendering do not count)."""
        return bool(self._texts or self._finals) or any(
            s.status not in (Status.RENDERING, Status.SAMPLING) for s in self._seqs.values())

    @property
    def full(self) -> bool:
        return len(self._seqs) >= self.model.slots

    # ---- arriving and leaving ----------------------------------------------------------------

    def add(self, req: protocol.Submit) -> None:
        """A request whose prompt a side thread is building (`prompt_built` follows)."""
        self._seqs[req.job_id] = Sequence(
            req.job_id, req.options, req.want_context, time.perf_counter_ns(),
            logprobs=req.logprobs, truncate=req.prompt.get("truncate", True), shift=req.shift)

    def prompt_built(self, job_id: int, outcome: Built | BaseException) -> None:
        seq = self._seqs[job_id]
        if isinstance(outcome, BaseException):
            self._prompt_failed(seq, outcome)
            return
        model, opts = self.model, seq.opts
        seq.grammar, seq.images = outcome.grammar, outcome.images
        seq.image_starts = sorted(outcome.images)
        tokens = outcome.tokens or [llama.llama_vocab_bos(model.vocab)]
        # Negative ids are an image's positions (workers/images.py), where it has images.
        bad = next((t for t in tokens if t >= model.n_vocab or (t < 0 and not seq.images)), None)
        if bad is not None:
            self.fail(job_id, f"context token {bad} is out of range for this model "
                              f"(0 to {model.n_vocab - 1})", kind="bad_request")
            return
        # An image is never cut in half: a prompt with images is not truncated or shifted.
        if (not seq.truncate or seq.images) and len(tokens) >= model.num_ctx:
            self.fail(job_id, "the input length exceeds the context length", kind="bad_request")
            return
        if seq.images and tokens[-1] < 0:
            self.fail(job_id, "the prompt must not end with an image", kind="bad_request")
            return
        seq.shift = seq.shift and not seq.images
        seq.window = Window.of(model.num_ctx, opts["num_keep"], len(tokens), model.adds_bos)
        seq.prompt = seq.window.fit_prompt(tokens)
        seq.tokens = list(seq.prompt)
        seq.limit = predict_limit(opts["num_predict"], model.num_ctx)
        seq.chain = Chain(opts, model.num_ctx, model.n_vocab, [t for t in seq.prompt if t >= 0])
        seq.text = TextStream(opts["stop"])
        if self._decode_costs is not None and seq.grammar is None and seq.logprobs < 0:
            seq.drafter = Drafter()
        seq.status = Status.WAITING  # for KV cells, in the next step
        self._send(protocol.Started(job_id, len(seq.prompt), outcome.thinking))

    def _prompt_failed(self, seq: Sequence, exc: BaseException) -> None:
        if isinstance(exc, RenderStopped):
            return  # cancelled: already released
        if isinstance(exc, (RenderTimeout, RenderCrashed, ValueError)):
            # A template error and a refused schema are ValueErrors: the request's fault.
            self.fail(seq.job_id, str(exc), kind="bad_request")
            return
        log.error("building the prompt of job %s failed: %r", seq.job_id, exc)
        self.fail(seq.job_id, f"internal error: {exc}")

    def cancel(self, job_id: int) -> None:
        seq = self._seqs.get(job_id)
        if seq is not None:
            self._release(seq)

    def fail(self, job_id: int, message: str, kind: str = "internal") -> None:
        self.cancel(job_id)
        self._send(protocol.Failed(job_id, message, kind=kind))

    def fail_all(self, message: str) -> list[int]:
        """Ends every request with `message` (the model is unloading); their job ids."""
        job_ids = self.cancel_all()
        for job_id in job_ids:
            self._send(protocol.Failed(job_id, message))
        return job_ids

    def cancel_all(self) -> list[int]:
        """Drops every request without a word (the worker is exiting); their job ids."""
        job_ids = list(self._seqs)
        for job_id in job_ids:
            self.cancel(job_id)
        return job_ids

    def _release(self, seq: Sequence) -> None:
        """Frees the sequence's KV cells, samplers and slot; idempotent per job. A grammar pass
        still uses the samplers: they go when it ends."""
        if self._seqs.pop(seq.job_id, None) is None:
            return
        self.kv.release(seq, list(self._seqs.values()))
        for image in seq.images.values():
            image.free()
        if seq.status == Status.SAMPLING:
            self._orphans[seq.job_id] = seq
        else:
            _free_samplers(seq)

    def close(self) -> None:
        """After every side thread is done with this model: the samplers still held."""
        for seq in self._orphans.values():
            _free_samplers(seq)
        self._orphans.clear()

    # ---- the step ----------------------------------------------------------------------------

    def step(self) -> None:
        seqs = [s for s in self._seqs.values() if s.status != Status.RENDERING]
        generating = {s.job_id for s in seqs if s.status == Status.GENERATING}  # before it
        start = time.perf_counter_ns()
        works, imaged = self._schedule(seqs)
        if works and not self._execute(works):
            works = []  # nothing was decoded
        duration = time.perf_counter_ns() - start
        tokens = sum(len(w.tokens) for w in works)
        decoded = sum(1 for w in works if _seq(w).job_id in generating and len(w.tokens) == 1)
        if not imaged:  # an image's decode is no measure of what tokens cost
            self._costs.record(decoded, tokens - decoded, duration)
        self._send(protocol.Step(self.model.model_id, self._texts, tokens, len(works), duration,
                                 self.kv.used(self._seqs.values()), self.kv.cells))
        self._texts = []
        for msg in self._finals:
            self._send(msg)
        self._finals.clear()

    def _schedule(self, seqs: list[Sequence]) -> tuple[list[Work], bool]:
        """The step's works, and whether an image was decoded before them."""
        for seq in seqs:  # a full context shifts, or ends the answer where shifting is not on
            if seq.status == Status.GENERATING and seq.n_computed >= self.model.num_ctx:
                if not (seq.shift and self.kv.shift(seq)):
                    self._finish(seq, "length")
                elif seq.drafter is not None:
                    seq.drafter = Drafter()  # its history moved: index it afresh
        seqs = [s for s in seqs if s.job_id in self._seqs]
        self.kv.make_room(seqs)
        self.kv.admit_waiting(seqs)
        admitted = [s for s in seqs if s.holds_cells]
        at_image = next((s for s in admitted if s.status == Status.PREFILLING
                         and s.n_computed in s.images), None)
        if at_image is not None:
            self._decode_image(at_image)
        admitted = [s for s in admitted if s.job_id in self._seqs]
        self._draft(admitted)
        generating = sum(1 for s in admitted if s.status == Status.GENERATING)
        waiting = sum(1 for s in admitted if s.status == Status.PREFILLING)
        budget = self.model.batch_tokens
        return (plan_step(admitted, budget,
                          self._costs.prefill_budget(budget, generating, waiting)),
                at_image is not None)

    def _draft(self, admitted: list[Sequence]) -> None:
        """This step's drafts: only while the batch of generating tokens is small, within the
        free KV cells, each sequence's context and what it may still generate."""
        generating = [s for s in admitted if s.status == Status.GENERATING]
        for seq in generating:
            seq.draft = []
        if self._decode_costs is None or not generating:
            return
        room = min(self.kv.free_cells(admitted), self.model.batch_tokens - len(generating))
        costs, draft_model = self._decode_costs, self.model.draft
        # Where not even a sure draft would pay (a CPU decoding a small batch), no lookups.
        if not plan_drafts(len(generating), [(1.0, MAX_DRAFT)], costs, room, self._draft_cost)[0]:
            return
        # (sequence, the lookup's draft or None where the draft model guesses after the plan)
        offered: list[tuple[Sequence, int, list[int] | None]] = []
        for seq in generating:
            if seq.drafter is None:
                continue
            limit = min(MAX_DRAFT, room, seq.limit - len(seq.generated) - 1,
                        self.model.num_ctx - 1 - seq.n_computed)
            if draft_model is None:
                proposal = seq.drafter.draft(seq.tokens, limit)
                if proposal:
                    offered.append((seq, len(proposal), proposal))
            elif not seq.images and (limit := min(limit, seq.opts["draft_num_predict"])) > 0:
                offered.append((seq, limit, None))  # a draft model sees no image
        offers = [(seq.drafter.acceptance, n) for seq, n, _ in offered]  # type: ignore[union-attr]
        lengths = plan_drafts(len(generating), offers, costs, room, self._draft_cost)
        guessing: list[tuple[Sequence, int]] = []  # the draft model's, made together
        for (seq, _, proposal), length in zip(offered, lengths):
            if proposal is not None:
                seq.draft = proposal[:length]
            elif length:
                guessing.append((seq, length))
        if guessing:
            made = draft_model.draft_many(  # type: ignore[union-attr]
                [(seq.slot, seq.tokens, length) for seq, length in guessing])
            for (seq, _), guesses in zip(guessing, made):
                seq.draft = guesses

    def _calibrate(self) -> Costs:
        """Times a decode of each of a few batch sizes (every token with its logits, as a
        draft's) in the empty cache, after one to warm up (~0.25 s on a CPU, once per load):
        what weighs a draft against the step it saves."""
        model, batch, measured = self.model, self.model.batch, {}
        token = llama.llama_vocab_bos(model.vocab)
        for n in (1, *(n for n in CALIBRATION_SIZES if n <= model.batch_tokens)):
            for k in range(n):
                batch.token[k], batch.pos[k], batch.n_seq_id[k] = token, k, 1
                batch.seq_id[k][0], batch.logits[k] = 0, True
            batch.n_tokens = n
            start = time.perf_counter()
            llama.llama_decode(model.ctx, batch)
            measured[n] = time.perf_counter() - start  # the warm-up's is overwritten
            self.kv.memory.remove(0)
        log.info("decode cost by batch size (ms): %s",
                 {n: round(t * 1e3, 2) for n, t in measured.items()})
        return Costs(measured)

    def _decode_image(self, seq: Sequence) -> None:
        """The image that starts at the sequence's next position, into its cells."""
        image, model = seq.images[seq.n_computed], self.model
        assert model.projector is not None
        if model.projector.decode(model.ctx, image, seq.n_computed, seq.slot, model.batch_tokens):
            seq.n_computed += image.n_tokens
            return
        self.kv.forget(seq, seq.n_computed)
        self.fail(seq.job_id, "llama_decode failed for this request's image")

    def _execute(self, works: list[Work]) -> bool:
        """Decodes the works and takes in what that gave; False if nothing was decoded."""
        rc = self._decode(works)
        if rc == 0:
            self._update(works)
        elif rc == 1:
            # llama.cpp found no room in the KV cache although the count said there was:
            # make room by preempting the newest sequence, and try again next step.
            log.warning("no KV cells for a batch of %d tokens; preempting",
                        sum(len(w.tokens) for w in works))
            self.kv.preempt(newest([_seq(w) for w in works]))
            return False
        else:
            # The batch failed. Decode each sequence on its own, so only those at fault fail.
            for work in works:
                self.kv.forget(_seq(work), work.pos)
            for work in works:
                if self._decode([work]) == 0:
                    self._update([work])
                else:
                    self.kv.forget(_seq(work), work.pos)
                    self.fail(_seq(work).job_id, "llama_decode failed for this request")
        return True

    def _decode(self, works: list[Work]) -> int:
        """Fills the batch with the works and decodes it: llama_decode's return code."""
        batch, n = self.model.batch, 0
        for work in works:
            seq_id = _seq(work).slot
            for k, token in enumerate(work.tokens):
                batch.token[n] = token
                batch.pos[n] = work.pos + k
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq_id
                batch.logits[n] = work.logits and k >= len(work.tokens) - 1 - work.drafted
                n += 1
        batch.n_tokens = n
        rc = llama.llama_decode(self.model.ctx, batch)
        if rc not in (0, 1):
            log.error("llama_decode returned %d for a batch of %d tokens", rc, n)
        return rc

    def _update(self, works: list[Work]) -> None:
        """After a decode: each sequence's cells count, and those that asked for logits sample
        their next token (the i-th output of the batch is the i-th work's last token)."""
        index = 0
        for work in works:
            seq = _seq(work)
            index += len(work.tokens)
            if work.drafted:
                self._verify(seq, work, index - 1 - work.drafted)
                continue
            seq.n_computed += len(work.tokens)
            if not work.logits:
                continue
            if seq.status == Status.PREFILLING:
                seq.last_chunk = work.pos
            if not seq.t_first:
                seq.t_first = time.perf_counter_ns()
            token = self._sample(seq, index - 1)
            if token is not None:
                self._accept(seq, token)

    def _verify(self, seq: Sequence, work: Work, first: int) -> None:
        """A generating sequence's pending token and draft were decoded (batch outputs from
        `first` on): it samples at each position in turn, as plain decoding would one step at a
        time, keeping drafted cells while the draft matches; the rest of the draft's cells go."""
        assert seq.drafter is not None
        drafts = work.tokens[-work.drafted:]
        seq.n_computed += 1  # the pending token's cell
        accepted = 0
        for j in range(len(drafts) + 1):
            token = seq.chain.sample(self.model, first + j)  # type: ignore[union-attr]
            self._accept(seq, token)
            if seq.job_id not in self._seqs or j == len(drafts) or token != drafts[j]:
                break
            accepted += 1
            seq.n_computed += 1  # the drafted cell holds the token sampled
        if seq.job_id in self._seqs:
            self.kv.forget(seq, seq.n_computed)
        seq.drafter.record(len(drafts), accepted)

    def _sample(self, seq: Sequence, index: int) -> int | None:
        """The sequence's next token, or None while its grammar's pass runs on a side thread.
        A sequence that asked for logprobs measures its logits row first (it is raw still)."""
        grammar, chain = seq.grammar, seq.chain
        assert chain is not None
        if grammar is not None and grammar.waiting:  # thinking first: not held to it yet
            grammar = None
        if grammar is None and seq.logprobs < 0:  # the common case: nothing to look at first
            return chain.sample(self.model, index)
        logits = self.model.logits(index)
        if seq.logprobs >= 0:
            seq.distribution = Distribution.of(logits, seq.logprobs)
        if grammar is None:
            return chain.sample(self.model, index)
        token = grammar.try_token(chain, logits)
        if token is None:
            seq.status = Status.SAMPLING
            copied = logits.copy()  # the next decode overwrites the context's logits
            if seq.distribution is not None:
                seq.distribution = Distribution(copied, seq.distribution.log_norm,
                                                seq.distribution.top)
            self._offload(seq.job_id, lambda: grammar.full_pass(chain, copied))
        return token

    def sampled(self, job_id: int, outcome: int | BaseException) -> None:
        """A grammar pass is over: its token goes on as if sampled in the step."""
        orphan = self._orphans.pop(job_id, None)
        if orphan is not None:
            _free_samplers(orphan)
            return
        seq = self._seqs[job_id]
        seq.status = Status.GENERATING  # until _accept says otherwise
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, GrammarDeadEnd):
                log.error("the grammar pass of job %s failed: %r", job_id, outcome)
            self.fail(job_id, str(outcome))
            return
        self._accept(seq, outcome)

    def _accept(self, seq: Sequence, token: int) -> None:
        model = self.model
        assert seq.text is not None
        if model.is_eog(token):
            self._finish(seq, "stop")
            return
        seq.generated.append(token)
        seq.unsent_tokens += 1
        piece = model.piece(token)
        if seq.grammar is not None and seq.grammar.waiting:
            seq.grammar.saw(piece)
        if seq.distribution is not None:
            seq.unsent_logprobs.append((seq.distribution.entry(token, model.piece),
                                        len(piece.decode(errors="ignore"))))
            seq.distribution = None
        text = seq.text.push(piece)
        if text:
            self._emit(seq, text)
        if seq.text.stopped:
            self._finish(seq, "stop")
        elif len(seq.generated) >= seq.limit:
            self._finish(seq, "length")
        else:
            seq.tokens.append(token)
            seq.status = Status.GENERATING

    def _emit(self, seq: Sequence, text: str, last: bool = False) -> None:
        """Sends text; with it, the logprobs of the tokens whose text it completes (all that
        are left, at the end): a token held back (a partial character, a possible stop) sends
        its logprobs when its text goes, and one cut with a stop string never does."""
        event: list[object] = [seq.job_id, text, seq.unsent_tokens]
        seq.unsent_tokens = 0
        if seq.logprobs >= 0:
            chars, sent = len(text), 0
            while sent < len(seq.unsent_logprobs) and (
                    last or seq.unsent_logprobs[sent][1] <= chars):
                chars -= seq.unsent_logprobs[sent][1]
                sent += 1
            event.append([entry for entry, _ in seq.unsent_logprobs[:sent]])
            del seq.unsent_logprobs[:sent]
        self._texts.append(event)

    def _finish(self, seq: Sequence, reason: str) -> None:
        assert seq.text is not None
        now = time.perf_counter_ns()
        tail = "" if seq.text.stopped else seq.text.flush()
        if tail:
            self._emit(seq, tail, last=True)
        self._release(seq)
        self._finals.append(protocol.Done(
            job_id=seq.job_id,
            done_reason=reason,
            prompt_eval_count=len(seq.prompt),
            prompt_eval_duration=seq.t_first - seq.t_start,
            prompt_cached=seq.reused,
            eval_count=len(seq.generated),
            eval_duration=now - seq.t_first,
            context=[t for t in seq.prompt if t >= 0] + seq.generated if seq.want_context else [],
            drafted=seq.drafter.drafted if seq.drafter else 0,
            accepted=seq.drafter.accepted if seq.drafter else 0,
            stop=seq.text.matched,
        ))


def _free_samplers(seq: Sequence) -> None:
    if seq.chain is not None:
        seq.chain.free()
    if seq.grammar is not None:
        seq.grammar.free()


def _seq(work: Work) -> Sequence:
    return work.seq  # type: ignore[return-value]  # the planner only sees the Planned fields
