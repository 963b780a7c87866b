"""Continuous batching on llama.cpp's low-level API.

Each loaded model has `slots` sequence ids in one shared context. A sequence is first rendered
and tokenized on the prompt thread (render.py), then fed to the batch. One engine step is
plan (planner.py: what each sequence adds), execute (fill one `llama_batch`, one
`llama_decode`) and update (sample each sequence that asked for logits with its own sampler
chain, stream its text, finish it). New requests join between steps; a finished or cancelled
sequence's KV cells are freed with `llama_memory_seq_rm` before the next step. A sequence that
fills its context is shifted (context.py) instead of stopped. Embedding inputs are tokenized on
the prompt thread too, then computed a chunk per step, so a long input never stalls generation
and never needs more than a chunk's memory.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import llama_cpp as llama
import numpy as np
import psutil

from workers import prompt, protocol
from workers.template.analysis import analyze
from workers.context import FILL_CONTEXT, Window, predict_limit
from workers.llm import BATCH_TOKENS, LoadedModel
from workers.options import RequestOptions
from workers.planner import GENERATING, PREFILLING, WAITING, StepCosts, Work, plan_step
from workers.protocol import Done, Embedded, Failed, Loaded, LoadFailed, Unloaded
from workers.prompt_threads import PromptThreads
from workers.render_pool import RenderCrashed, RenderPool, RenderStopped, RenderTimeout
from workers.grammar import Grammar, GrammarDeadEnd, grammar_text
from workers.sampling import build_chain, free_chain
from workers.slots import SlotPool, common_prefix
from workers.textstream import TextStream

log = logging.getLogger("corral.worker")

Send = Callable[[protocol.FromWorker], None]

# Cells a sequence must find free beyond its prompt to be admitted: room for its first tokens.
# Past that, a full cache preempts the newest sequence rather than refuse the oldest.
ADMIT_HEADROOM = 64
ALL = sys.maxsize  # Sequence.clean when no context shift has touched its cells
UNLOAD_WAIT = 30.0  # seconds an unload waits for prompt threads still tokenizing with the model


@dataclass
class Sequence:
    job_id: int
    model: LoadedModel
    opts: RequestOptions
    want_context: bool
    t_start: int
    status: str = WAITING  # waiting (rendering, or for KV cells), prefilling, generating
    rendered: bool = False
    slot: int = -1  # llama.cpp sequence id while it holds cells
    prompt: list[int] = field(default_factory=list)  # as fitted to the context
    # What its cells hold or will hold, position = index: the prompt, then each sampled token.
    # While generating, the last one is sampled but not yet decoded. A context shift drops
    # tokens here as it drops their cells.
    tokens: list[int] = field(default_factory=list)
    n_computed: int = 0  # tokens[:n_computed] are in the KV cache
    clean: int = ALL  # tokens[:clean] have the cells a fresh computation gives (reusable)
    reused: int = 0  # prompt tokens found in the cache
    shared: bool = False  # some cells are shared with another sequence: never shift them
    last_chunk: int = 0  # where the prefill chunk that ended its prompt began
    window: Window | None = None
    limit: int = 0  # most tokens it may generate
    chain: llama.llama_sampler_p | None = None
    grammar: Grammar | None = None  # structured output (`format`)
    text: TextStream | None = None
    generated: list[int] = field(default_factory=list)
    unsent_tokens: int = 0  # tokens whose text is held back (partial character or stop)
    t_first: int = 0  # when the prompt was done and the first token sampled


@dataclass
class EmbedJob:
    job_id: int
    model: LoadedModel
    inputs: list[str | list[int]]
    truncate: bool
    vectors: list[list[float]] = field(default_factory=list)
    tokens: list[int] | None = None  # the current input's, once tokenized (prompt thread)
    pos: int = 0  # tokens of the current input already decoded
    total: np.ndarray | None = None  # sum of chunk means weighted by chunk length
    counted: int = 0  # tokens over all inputs


class Engine:
    def __init__(self, send: Send, n_threads: int) -> None:
        self._send = send
        self._n_threads = n_threads
        self.models: dict[str, LoadedModel] = {}
        self._pools: dict[str, SlotPool] = {}
        self._costs: dict[str, StepCosts] = {}
        self._seqs: dict[int, Sequence] = {}  # insertion order is arrival order
        self._embeds: dict[int, EmbedJob] = {}  # insertion order is arrival order
        self._texts: list[list[object]] = []  # this step's [job_id, text, tokens]
        self._finals: list[protocol.FromWorker] = []  # this step's Done, sent after its Step
        self.prompts = PromptThreads(RenderPool())

    @property
    def has_work(self) -> bool:
        """Whether a step would do something (sequences rendering on the side do not count)."""
        return (any(j.tokens is not None for j in self._embeds.values())
                or any(s.rendered for s in self._seqs.values()))

    # ---- messages ------------------------------------------------------------------------

    def handle(self, msg: protocol.ToWorker) -> None:
        try:
            self._dispatch(msg)
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the worker down
            job_id = getattr(msg, "job_id", None)
            if job_id is None:
                raise
            log.exception("job %s failed", job_id)
            self._fail(job_id, f"internal error: {exc}")

    def _dispatch(self, msg: protocol.ToWorker) -> None:
        if isinstance(msg, protocol.Submit):
            self._submit(msg)
        elif isinstance(msg, protocol.Cancel):
            self.prompts.cancel(msg.job_id)
            seq = self._seqs.get(msg.job_id)
            if seq is not None:
                self._release(seq)
            job = self._embeds.pop(msg.job_id, None)
            if job is not None:
                job.model.end_embedding()
        elif isinstance(msg, protocol.Load):
            self._load(msg)
        elif isinstance(msg, protocol.Unload):
            self._unload(msg.model_id)
        elif isinstance(msg, protocol.Embed):
            self._embed(msg)
        elif isinstance(msg, protocol.Ping):
            self._send(protocol.Pong(msg.nonce))

    def _load(self, req: protocol.Load) -> None:
        model = self.models.get(req.model_id)
        if model is None:
            try:
                model = LoadedModel(req, self._n_threads)
            except Exception as exc:  # noqa: BLE001 - reported to the front end, worker lives on
                self._send(LoadFailed(req.model_id, str(exc)))
                return
            self.models[req.model_id] = model
            # Batch-invariant output needs each request to start from an empty cache.
            self._pools[req.model_id] = SlotPool(req.slots, reuse=not req.batch_invariant)
            self._costs[req.model_id] = StepCosts()
        self._send(Loaded(req.model_id, model.load_duration, model.weights_size, model.gpu))

    def _unload(self, model_id: str) -> None:
        model = self.models.pop(model_id, None)
        if model is not None:
            for seq in [s for s in self._seqs.values() if s.model is model]:
                self.prompts.cancel(seq.job_id)
                self._release(seq)
                self._send(Failed(seq.job_id, "model was unloaded"))
            self.prompts.wait_until_idle(UNLOAD_WAIT)
            for job in [j for j in self._embeds.values() if j.model is model]:
                self.prompts.cancel(job.job_id)
                del self._embeds[job.job_id]
                self._send(Failed(job.job_id, "model was unloaded"))
            model.close()
            del self._pools[model_id], self._costs[model_id]
        self._send(Unloaded(model_id))

    def _submit(self, req: protocol.Submit) -> None:
        model = self.models.get(req.model_id)
        if model is None:
            self._send(Failed(req.job_id, "model is not loaded"))
            return
        if sum(s.model is model for s in self._seqs.values()) >= model.slots:
            self._send(Failed(req.job_id, "no free sequence slot"))
            return
        self._seqs[req.job_id] = Sequence(
            job_id=req.job_id, model=model, opts=req.options,
            want_context=req.want_context, t_start=time.perf_counter_ns())
        spec, output_format, job_id = req.prompt, req.format, req.job_id

        def render(messages: list[protocol.ChatMessage]) -> str:
            return self.prompts.renderers.render(job_id, protocol.Render(
                spec["template"], list(messages), model.chat_template, model.bos_text,
                model.eos_text, spec.get("tools"), spec.get("think"), spec.get("suffix", "")))

        def prepare() -> tuple[list[int], bool, Grammar | None]:
            tokens, text = prompt.build_tokens(spec, render, model.tokenize, model.num_ctx)
            thinking = bool(spec.get("think")) and analyze(spec["template"]).opens_thinking(text)
            # Compiled here too: llama.cpp's grammar parser takes a while on a large schema,
            # and the engine's thread must not wait for it.
            grammar = None if output_format is None else Grammar(
                model.vocab, grammar_text(output_format), model.n_vocab)
            return tokens, thinking, grammar

        self.prompts.submit(job_id, prepare)

    # ---- prompts from the prompt thread --------------------------------------------------

    def poll(self) -> None:
        """Admits the prompts the prompt threads have built."""
        for job_id, outcome in self.prompts.results():
            seq = self._seqs.get(job_id)
            if seq is not None:
                self._rendered(seq, outcome)
            elif job_id in self._embeds:
                self._embed_tokens(self._embeds[job_id], outcome)

    def _rendered(self, seq: Sequence, outcome: object) -> None:
        model = seq.model
        if isinstance(outcome, BaseException):
            if isinstance(outcome, RenderStopped):
                return  # cancelled: already released
            if isinstance(outcome, (RenderTimeout, RenderCrashed, ValueError)):
                message = str(outcome)  # TemplateError and a refused schema are ValueErrors
            else:
                log.error("building the prompt of job %s failed: %r", seq.job_id, outcome)
                self._fail(seq.job_id, f"internal error: {outcome}")
                return
            self._fail(seq.job_id, message, kind="bad_request")
            return
        rendered, thinking, seq.grammar = outcome  # type: ignore[misc]
        tokens = rendered or [llama.llama_vocab_bos(model.vocab)]
        bad = next((t for t in tokens if not 0 <= t < model.n_vocab), None)
        if bad is not None:
            self._fail(seq.job_id, f"context token {bad} is out of range for this model "
                                   f"(0 to {model.n_vocab - 1})", kind="bad_request")
            return
        opts = seq.opts
        seq.window = Window.of(model.num_ctx, opts["num_keep"], len(tokens))
        seq.prompt = seq.window.fit_prompt(tokens)
        seq.tokens = list(seq.prompt)
        seq.limit = predict_limit(opts["num_predict"], model.num_ctx)
        seq.chain = build_chain(opts, model.num_ctx, model.n_vocab, seq.prompt)
        seq.text = TextStream(opts["stop"])
        seq.rendered = True  # waits for KV cells in the next step
        self._send(protocol.Started(seq.job_id, len(seq.prompt), thinking))

    # ---- the step loop -------------------------------------------------------------------

    def step(self) -> None:
        if self._embeds:
            self._embed_chunk()
        for model in list(self.models.values()):
            seqs = [s for s in self._seqs.values() if s.model is model and s.rendered]
            if seqs:
                self._step_model(model, seqs)

    def _step_model(self, model: LoadedModel, seqs: list[Sequence]) -> None:
        generating = {s.job_id for s in seqs if s.status == GENERATING}  # before the step
        start = time.perf_counter_ns()
        works = self._run_step(model, seqs)
        duration = time.perf_counter_ns() - start
        tokens = sum(len(w.tokens) for w in works)
        decoded = sum(1 for w in works if _seq(w).job_id in generating and len(w.tokens) == 1)
        self._costs[model.model_id].record(decoded, tokens - decoded, duration)
        self._send(protocol.Step(model.model_id, self._texts, tokens, len(works), duration,
                                 self._used_cells(model), model.kv_cells))
        self._texts = []
        for msg in self._finals:
            self._send(msg)
        self._finals.clear()

    def _run_step(self, model: LoadedModel, seqs: list[Sequence]) -> list[Work]:
        for seq in seqs:
            if seq.status == GENERATING and seq.n_computed >= model.num_ctx:
                self._shift(seq)
        self._make_room(model)
        self._admit_waiting(model, seqs)
        running = [s for s in seqs if s.job_id in self._seqs and s.status != WAITING]
        decoding = any(s.status == GENERATING for s in running)
        works = plan_step(running, BATCH_TOKENS,
                          self._costs[model.model_id].prefill_budget(BATCH_TOKENS, decoding))
        if not works:
            return works
        rc = self._execute(model, works)
        if rc == 0:
            return works
        if rc == 1:
            # llama.cpp found no room in the KV cache although the count said there was:
            # make room by preempting the newest sequence, and try again next step.
            log.warning("no KV cells for a batch of %d tokens; preempting",
                        sum(len(w.tokens) for w in works))
            self._preempt(max(running, key=lambda s: s.job_id))
            return []
        # The batch failed. Decode each sequence on its own, so only those at fault fail.
        for work in works:
            _forget(model, work)
        for work in works:
            if self._execute(model, [work]) != 0:
                _forget(model, work)
                self._fail(_seq(work).job_id, "llama_decode failed for this request")
        return works

    # ---- KV cells ------------------------------------------------------------------------

    def _used_cells(self, model: LoadedModel) -> int:
        """Cells that hold something now: running sequences' and idle slots' cached ones. A
        shared cell counts once per sequence in it, so this can overstate: capped at the size."""
        return min(model.kv_cells, self._pools[model.model_id].idle_cells
                   + sum(s.n_computed for s in self._seqs.values() if s.model is model))

    def _committed(self, model: LoadedModel) -> int:
        """Cells in use once every running sequence has computed all it holds (its pending
        token included): what admission and preemption count."""
        return (self._pools[model.model_id].idle_cells
                + sum(len(s.tokens) for s in self._seqs.values()
                      if s.model is model and s.status != WAITING))

    def _free_idle(self, model: LoadedModel, need: int) -> bool:
        """Empties idle cached slots, least recently used first, until `need` cells are free."""
        pool = self._pools[model.model_id]
        while model.kv_cells - self._committed(model) < need:
            victim = pool.evict()
            if victim is None:
                return False
            llama.llama_memory_seq_rm(model.memory, victim, -1, -1)
        return True

    def _admit_waiting(self, model: LoadedModel, seqs: list[Sequence]) -> None:
        """Gives rendered sequences a slot, in arrival order, while free cells allow room for
        their tokens and first few generated ones. The first that does not fit stops the rest:
        arrival order holds, and the running sequences free cells as they finish."""
        pool = self._pools[model.model_id]
        for seq in seqs:
            if seq.status != WAITING or seq.job_id not in self._seqs:
                continue
            headroom = min(seq.limit - len(seq.generated), ADMIT_HEADROOM)
            slot, keep, shared = pool.take(seq.tokens)  # its cached cells now count as its own
            need = min(len(seq.tokens) + headroom, model.num_ctx)
            if not self._free_idle(model, need):
                pool.give_back(slot, seq.tokens[:keep], shared)
                return
            llama.llama_memory_seq_rm(model.memory, slot, keep, -1)
            source, common = self._running_prefix(model, seq)
            if source is not None and common > keep:
                # A running sequence has computed more of this start: share its cells.
                llama.llama_memory_seq_rm(model.memory, slot, -1, -1)
                llama.llama_memory_seq_cp(model.memory, source.slot, slot, 0, common)
                keep, shared, source.shared = common, True, True
            seq.slot, seq.n_computed, seq.clean = slot, keep, ALL
            seq.shared = shared
            seq.status = PREFILLING
            if not seq.generated:
                seq.reused = keep

    def _running_prefix(self, model: LoadedModel,
                        seq: Sequence) -> tuple[Sequence | None, int]:
        """The running sequence whose computed, reusable cells share the longest start with
        `seq`'s tokens, and how many of them it may take (never its last token)."""
        best: tuple[Sequence | None, int] = (None, 0)
        if not self._pools[model.model_id].reuse:
            return best
        for other in self._seqs.values():
            if other is seq or other.model is not model or other.slot < 0:
                continue
            usable = other.tokens[:min(other.clean, other.n_computed)]
            common = min(common_prefix(usable, seq.tokens), len(seq.tokens) - 1)
            if common > best[1]:
                best = (other, common)
        return best

    def _make_room(self, model: LoadedModel) -> None:
        """Makes the running sequences' tokens fit in the cache (each generated token adds
        one): idle cached cells go first, then the newest sequences are preempted (their
        cells freed; they recompute once cells are free again)."""
        while not self._free_idle(model, 0):
            running = [s for s in self._seqs.values() if s.model is model and s.status != WAITING]
            if len(running) <= 1:
                return
            self._preempt(max(running, key=lambda s: s.job_id))

    def _preempt(self, seq: Sequence) -> None:
        log.info("job %s preempted: the KV cache is full (%d tokens to recompute)", seq.job_id,
                 len(seq.tokens))
        llama.llama_memory_seq_rm(seq.model.memory, seq.slot, -1, -1)
        self._pools[seq.model.model_id].give_back(seq.slot, [])
        seq.slot, seq.n_computed, seq.status, seq.shared = -1, 0, WAITING, False

    def _execute(self, model: LoadedModel, works: list[Work]) -> int:
        """Fills the batch, decodes it and applies the outcome; llama_decode's return code."""
        batch = model.batch
        n = 0
        sample_at: list[int] = []
        for work in works:
            seq_id = _seq(work).slot
            for k, token in enumerate(work.tokens):
                batch.token[n] = token
                batch.pos[n] = work.pos + k
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq_id
                batch.logits[n] = work.logits and k == len(work.tokens) - 1
                n += 1
            sample_at.append(n - 1 if work.logits else -1)
        batch.n_tokens = n
        rc = llama.llama_decode(model.ctx, batch)
        if rc != 0:
            if rc != 1:
                log.error("llama_decode returned %d for a batch of %d tokens", rc, n)
            return rc
        for work, index in zip(works, sample_at):
            seq = _seq(work)
            seq.n_computed += len(work.tokens)
            if index < 0:
                continue
            if seq.status == PREFILLING:
                seq.last_chunk = work.pos
            if not seq.t_first:
                seq.t_first = time.perf_counter_ns()
            if seq.grammar is not None:
                try:
                    token = seq.grammar.sample(seq.chain, model.ctx, index)
                except GrammarDeadEnd as exc:
                    self._fail(seq.job_id, str(exc))
                    continue
            else:
                token = llama.llama_sampler_sample(seq.chain, model.ctx, index)
            self._accept(seq, token)
        return 0

    def _shift(self, seq: Sequence) -> None:
        """Drops the oldest half after `keep` from the KV cache, so generation can go on."""
        model, window = seq.model, seq.window
        assert window is not None
        start, end = window.keep, window.keep + window.discard
        if seq.shared:
            # Moving shared cells would move them for the other sequences too: let go of them
            # all and compute what remains afresh instead.
            llama.llama_memory_seq_rm(model.memory, seq.slot, -1, -1)
            del seq.tokens[start:end]
            seq.n_computed, seq.shared, seq.status = 0, False, PREFILLING
            seq.clean = ALL  # all computed afresh
            return
        if not llama.llama_memory_can_shift(model.memory):
            self._finish(seq, "length")
            return
        llama.llama_memory_seq_rm(model.memory, seq.slot, start, end)
        llama.llama_memory_seq_add(model.memory, seq.slot, end, -1, -window.discard)
        del seq.tokens[start:end]
        seq.n_computed -= window.discard
        # Cells after `keep` were computed with the dropped tokens in view: not reusable.
        seq.clean = min(seq.clean, start)

    def _accept(self, seq: Sequence, token: int) -> None:
        model = seq.model
        assert seq.text is not None
        if model.is_eog(token):
            self._finish(seq, "stop")
            return
        seq.generated.append(token)
        seq.unsent_tokens += 1
        text = seq.text.push(model.piece(token))
        if text:
            self._texts.append([seq.job_id, text, seq.unsent_tokens])
            seq.unsent_tokens = 0
        context_full = (seq.opts["num_predict"] == FILL_CONTEXT
                        and seq.n_computed + 1 >= model.num_ctx)
        if seq.text.stopped:
            self._finish(seq, "stop")
        elif len(seq.generated) >= seq.limit or context_full:
            self._finish(seq, "length")
        else:
            seq.tokens.append(token)
            seq.status = GENERATING

    def _finish(self, seq: Sequence, reason: str) -> None:
        assert seq.text is not None
        now = time.perf_counter_ns()
        tail = "" if seq.text.stopped else seq.text.flush()
        if tail:
            self._texts.append([seq.job_id, tail, seq.unsent_tokens])
        self._release(seq)
        self._finals.append(Done(
            job_id=seq.job_id,
            done_reason=reason,
            prompt_eval_count=len(seq.prompt),
            prompt_eval_duration=seq.t_first - seq.t_start,
            prompt_cached=seq.reused,
            eval_count=len(seq.generated),
            eval_duration=now - seq.t_first,
            context=seq.prompt + seq.generated if seq.want_context else [],
        ))

    def _fail(self, job_id: int, message: str, kind: str = "internal") -> None:
        seq = self._seqs.get(job_id)
        if seq is not None:
            self._release(seq)
        self._send(Failed(job_id, message, kind=kind))

    def _release(self, seq: Sequence) -> None:
        """Frees the sequence's KV cells, sampler and slot; idempotent per job."""
        if self._seqs.pop(seq.job_id, None) is None:
            return
        model, pool = seq.model, self._pools[seq.model.model_id]
        if seq.slot >= 0:
            # The cells stay for a later request with the same start (the next chat turn).
            keep = min(seq.clean, seq.n_computed) if pool.reuse else 0
            llama.llama_memory_seq_rm(model.memory, seq.slot, keep, -1)
            pool.give_back(seq.slot, seq.tokens[:keep], seq.shared, seq.last_chunk)
        if not pool.reuse and not any(s.model is model for s in self._seqs.values()):
            # Batch-invariant mode: an idle cache starts over from cell 0, so a request run
            # alone always sees the same KV layout and gives the same tokens for a seed.
            llama.llama_memory_clear(model.memory, False)
        if seq.chain is not None:
            free_chain(seq.chain)
        if seq.grammar is not None:
            seq.grammar.free()

    # ---- embeddings ----------------------------------------------------------------------

    def _embed(self, req: protocol.Embed) -> None:
        model = self.models.get(req.model_id)
        if model is None:
            self._send(Failed(req.job_id, "model is not loaded"))
            return
        job = EmbedJob(req.job_id, model, list(req.inputs), req.truncate)
        self._embeds[req.job_id] = job
        self._tokenize_next(job)

    def _tokenize_next(self, job: EmbedJob) -> None:
        """Tokenizes the job's next input on the prompt thread: a 10 MB input takes seconds."""
        text, model, truncate = job.inputs[len(job.vectors)], job.model, job.truncate
        self.prompts.submit(job.job_id, lambda: model.embedding_tokens(text, truncate))

    def _embed_tokens(self, job: EmbedJob, outcome: object) -> None:
        if isinstance(outcome, BaseException):
            if isinstance(outcome, RenderStopped):
                return  # cancelled
            del self._embeds[job.job_id]
            bad_request = isinstance(outcome, (ValueError, RenderTimeout))
            self._send(Failed(job.job_id, str(outcome) or "tokenizing took too long",
                              kind="bad_request" if bad_request else "internal"))
            return
        assert isinstance(outcome, list)
        job.tokens, job.pos = outcome, 0
        job.total = np.zeros(job.model.n_embd, dtype=np.float64)

    def _embed_chunk(self) -> None:
        """Decodes the next chunk of an embedding input: the one already begun (its cells are in
        the embedding context until it ends), else the first ready job in line. A job goes to
        the back of the line after each input, so a batch of thousands of inputs takes turns
        with the requests that came after it instead of making them wait for all of it."""
        ready = [j for j in self._embeds.values() if j.tokens is not None]
        if not ready:
            return
        job = next((j for j in ready if j.pos > 0), ready[0])
        try:
            self._advance(job)
        except Exception as exc:  # noqa: BLE001 - fail this request, keep the worker
            del self._embeds[job.job_id]
            job.model.end_embedding()
            self._send(Failed(job.job_id, str(exc),
                              kind="bad_request" if isinstance(exc, ValueError) else "internal"))
            return
        if len(job.vectors) == len(job.inputs):
            del self._embeds[job.job_id]
            job.model.end_embedding()
            self._send(Embedded(job.job_id, job.vectors, job.counted, job.model.embed_memory))
        elif job.tokens is None:
            self._embeds[job.job_id] = self._embeds.pop(job.job_id)  # to the back of the line
            self._tokenize_next(job)

    def _advance(self, job: EmbedJob) -> None:
        model = job.model
        assert job.tokens is not None and job.total is not None
        if job.tokens:
            before = psutil.Process().memory_info().rss if model.embed_memory == 0 else 0
            chunk = job.tokens[job.pos: job.pos + model.embed_batch]
            job.total += model.embed_chunk(chunk, job.pos) * len(chunk)
            job.pos += len(chunk)
            if before:
                model.embed_memory = max(psutil.Process().memory_info().rss - before, 1)
        if job.pos < len(job.tokens):
            return
        n = len(job.tokens)
        vector = job.total / n if n else np.zeros(model.n_embd)
        if not np.all(np.isfinite(vector)):
            raise RuntimeError("embedding contains non-finite values")
        job.vectors.append(vector.tolist())
        job.counted += n
        job.tokens = None
        model.end_embedding()

    def close(self) -> None:
        for seq in list(self._seqs.values()):
            self.prompts.cancel(seq.job_id)
            self._release(seq)
        self.prompts.wait_until_idle(UNLOAD_WAIT)
        for model in self.models.values():
            model.close()
        self.models.clear()
        self.prompts.close()


def _seq(work: Work) -> Sequence:
    return work.seq  # type: ignore[return-value]  # the planner only sees the Planned fields


def _forget(model: LoadedModel, work: Work) -> None:
    """Removes what a failed decode may have left of this work in the KV cache."""
    llama.llama_memory_seq_rm(model.memory, _seq(work).slot, work.pos, -1)

