"""Continuous batching on llama.cpp's low-level API.

Each loaded model has `slots` sequence ids in one shared context. One engine step builds a single
`llama_batch` per model holding every generating sequence's next token plus as much pending
prompt (prefill) as fits, runs one `llama_decode`, then samples each sequence that asked for
logits with its own sampler chain. New requests join between steps; a finished or cancelled
sequence's KV cells are freed with `llama_memory_seq_rm` before the next step. Embedding
requests are served one input per step, so a large batch of them never stalls generation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import llama_cpp as llama

from workers import prompt, protocol
from workers.llm import BATCH_TOKENS, LoadedModel
from workers.protocol import Chunk, Done, Embedded, Failed, Loaded, LoadFailed, Unloaded
from workers.sampling import build_chain, free_chain
from workers.textstream import TextStream

log = logging.getLogger("corral.worker")

Send = Callable[[protocol.FromWorker], None]


@dataclass
class Sequence:
    job_id: int
    model: LoadedModel
    slot: int
    prompt: list[int]
    opts: protocol.SamplingOptions
    chain: llama.llama_sampler_p
    text: TextStream
    want_context: bool
    t_start: int
    n_past: int = 0  # tokens already in the KV cache
    next_token: int | None = None  # sampled and emitted, not yet decoded
    generated: list[int] = field(default_factory=list)
    unsent_tokens: int = 0  # tokens whose text is held back (partial character or stop)
    t_first: int = 0  # when the prompt was done and the first token sampled


@dataclass
class EmbedJob:
    job_id: int
    model: LoadedModel
    inputs: list[str]
    truncate: bool
    vectors: list[list[float]] = field(default_factory=list)
    tokens: int = 0


class Engine:
    def __init__(self, send: Send, n_threads: int) -> None:
        self._send = send
        self._n_threads = n_threads
        self.models: dict[str, LoadedModel] = {}
        self._free_slots: dict[str, list[int]] = {}
        self._seqs: dict[int, Sequence] = {}
        self._embeds: dict[int, EmbedJob] = {}  # insertion order is arrival order

    @property
    def busy(self) -> bool:
        return bool(self._seqs or self._embeds)

    # ---- messages ------------------------------------------------------------------------

    def handle(self, msg: protocol.ToWorker) -> None:
        try:
            self._dispatch(msg)
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the worker down
            job_id = getattr(msg, "job_id", None)
            if job_id is None:
                raise
            log.exception("job %s failed", job_id)
            seq = self._seqs.get(job_id)
            if seq is not None:
                self._release(seq)
            self._send(Failed(job_id, f"internal error: {exc}"))

    def _dispatch(self, msg: protocol.ToWorker) -> None:
        if isinstance(msg, protocol.Submit):
            self._submit(msg)
        elif isinstance(msg, protocol.Cancel):
            seq = self._seqs.get(msg.job_id)
            if seq is not None:
                self._release(seq)
            self._embeds.pop(msg.job_id, None)
        elif isinstance(msg, protocol.Load):
            self._load(msg)
        elif isinstance(msg, protocol.Unload):
            self._unload(msg.model_id)
        elif isinstance(msg, protocol.Embed):
            self._embed(msg)

    def _load(self, req: protocol.Load) -> None:
        model = self.models.get(req.model_id)
        if model is None:
            try:
                model = LoadedModel(req, self._n_threads)
            except Exception as exc:  # noqa: BLE001 - reported to the front end, worker lives on
                self._send(LoadFailed(req.model_id, str(exc)))
                return
            self.models[req.model_id] = model
            self._free_slots[req.model_id] = list(range(req.slots))
        self._send(Loaded(req.model_id, model.load_duration, model.weights_size, model.gpu))

    def _unload(self, model_id: str) -> None:
        model = self.models.pop(model_id, None)
        if model is not None:
            for seq in [s for s in self._seqs.values() if s.model is model]:
                self._release(seq)
                self._send(Failed(seq.job_id, "model was unloaded"))
            for job in [j for j in self._embeds.values() if j.model is model]:
                del self._embeds[job.job_id]
                self._send(Failed(job.job_id, "model was unloaded"))
            model.close()
            del self._free_slots[model_id]
        self._send(Unloaded(model_id))

    def _submit(self, req: protocol.Submit) -> None:
        model = self.models.get(req.model_id)
        if model is None:
            self._send(Failed(req.job_id, "model is not loaded"))
            return
        slots = self._free_slots[req.model_id]
        if not slots:
            self._send(Failed(req.job_id, "no free sequence slot"))
            return
        opts = req.options
        try:
            tokens = prompt.build_tokens(
                req.prompt, lambda msgs: model.render(req.prompt["template"], msgs),
                model.tokenize, model.num_ctx, opts["num_keep"])
        except prompt.TemplateError as exc:
            self._send(Failed(req.job_id, str(exc), kind="bad_request"))
            return
        if not tokens:
            tokens = [llama.llama_vocab_bos(model.vocab)]
        self._seqs[req.job_id] = Sequence(
            job_id=req.job_id, model=model, slot=_take_lowest(slots), prompt=tokens, opts=opts,
            chain=build_chain(opts, model.num_ctx, model.n_vocab, tokens), text=TextStream(opts["stop"]),
            want_context=req.want_context, t_start=time.perf_counter_ns())

    def _embed(self, req: protocol.Embed) -> None:
        model = self.models.get(req.model_id)
        if model is None:
            self._send(Failed(req.job_id, "model is not loaded"))
            return
        self._embeds[req.job_id] = EmbedJob(req.job_id, model, list(req.inputs), req.truncate)

    def _embed_one(self) -> None:
        """Embeds one input of the oldest embedding job, so decoding waits for one at most."""
        job = next(iter(self._embeds.values()))
        try:
            vector, n = job.model.embed(job.inputs[len(job.vectors)], job.truncate)
        except Exception as exc:  # noqa: BLE001 - fail this request, keep the worker
            del self._embeds[job.job_id]
            bad_input = isinstance(exc, ValueError)
            self._send(Failed(job.job_id, str(exc), kind="bad_request" if bad_input else "internal"))
            return
        job.vectors.append(vector)
        job.tokens += n
        if len(job.vectors) == len(job.inputs):
            del self._embeds[job.job_id]
            self._send(Embedded(job.job_id, job.vectors, job.tokens))

    # ---- the step loop -------------------------------------------------------------------

    def step(self) -> None:
        if self._embeds:
            self._embed_one()
        for model in list(self.models.values()):
            seqs = sorted((s for s in self._seqs.values() if s.model is model), key=lambda s: s.slot)
            if seqs:
                self._step_model(model, seqs)

    def _step_model(self, model: LoadedModel, seqs: list[Sequence]) -> None:
        batch = model.batch
        n = 0
        added: list[tuple[Sequence, int, int]] = []  # (sequence, tokens added, logits index)

        def put(token: int, pos: int, seq_id: int, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = pos
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq_id
            batch.logits[n] = logits
            n += 1

        # Generating sequences first (one token each), so prefill never delays their next token.
        for seq in seqs:
            if seq.next_token is not None:
                put(seq.next_token, seq.n_past, seq.slot, True)
                added.append((seq, 1, n - 1))
        for seq in seqs:
            remaining = len(seq.prompt) - seq.n_past
            if seq.next_token is not None or remaining <= 0:
                continue
            take = min(remaining, BATCH_TOKENS - n)
            if take <= 0:
                break
            for k in range(take):
                put(seq.prompt[seq.n_past + k], seq.n_past + k, seq.slot, k == remaining - 1)
            added.append((seq, take, n - 1 if take == remaining else -1))
        batch.n_tokens = n
        rc = llama.llama_decode(model.ctx, batch)
        if rc != 0:
            for seq in seqs:
                self._release(seq)
                self._send(Failed(seq.job_id, f"llama_decode failed with status {rc}"))
            return
        for seq, count, index in added:
            seq.n_past += count
            if index < 0:
                continue
            if not seq.t_first:
                seq.t_first = time.perf_counter_ns()
            self._accept(seq, llama.llama_sampler_sample(seq.chain, model.ctx, index))

    def _accept(self, seq: Sequence, token: int) -> None:
        model = seq.model
        if model.is_eog(token):
            self._finish(seq, "stop")
            return
        seq.generated.append(token)
        seq.unsent_tokens += 1
        text = seq.text.push(model.piece(token))
        if text:
            self._send(Chunk(seq.job_id, text, seq.unsent_tokens))
            seq.unsent_tokens = 0
        num_predict = seq.opts["num_predict"]
        if seq.text.stopped:
            self._finish(seq, "stop")
        elif 0 < num_predict <= len(seq.generated) or seq.n_past + 1 >= model.num_ctx:
            self._finish(seq, "length")
        else:
            seq.next_token = token

    def _finish(self, seq: Sequence, reason: str) -> None:
        now = time.perf_counter_ns()
        tail = "" if seq.text.stopped else seq.text.flush()
        if tail:
            self._send(Chunk(seq.job_id, tail, seq.unsent_tokens))
        self._release(seq)
        self._send(Done(
            job_id=seq.job_id,
            done_reason=reason,
            prompt_eval_count=len(seq.prompt),
            prompt_eval_duration=seq.t_first - seq.t_start,
            eval_count=len(seq.generated),
            eval_duration=now - seq.t_first,
            context=seq.prompt + seq.generated if seq.want_context else [],
        ))

    def _release(self, seq: Sequence) -> None:
        """Frees the sequence's KV cells, sampler and slot; idempotent per job."""
        if self._seqs.pop(seq.job_id, None) is None:
            return
        llama.llama_memory_seq_rm(seq.model.memory, seq.slot, -1, -1)
        if not any(s.model is seq.model for s in self._seqs.values()):
            # An idle cache starts over from cell 0, so a request run alone always sees the
            # same KV layout and gives the same tokens for the same seed.
            llama.llama_memory_clear(seq.model.memory, False)
        free_chain(seq.chain)
        self._free_slots[seq.model.model_id].append(seq.slot)

    def close(self) -> None:
        for seq in list(self._seqs.values()):
            self._release(seq)
        for model in self.models.values():
            model.close()
        self.models.clear()


def _take_lowest(slots: list[int]) -> int:
    slot = min(slots)
    slots.remove(slot)
    return slot
