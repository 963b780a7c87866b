"""Embeddings of one loaded model: its requests in line, one decode per engine step.

Inputs are tokenized on side threads. What a step decodes depends on the model:
- an encoder (BERT: non-causal attention) sees each input whole, as llama.cpp's own embedding
  does; several inputs of a request share a decode, each its own sequence, up to the embedding
  context's tokens;
- a causal model takes one input a chunk at a time, the earlier chunks in its cache, so a long
  input never stalls generation and never needs more than a chunk's buffers. That is exact for
  the pooling such a model uses: a mean over all tokens is the chunks' means weighted by their
  length, the last token is in the last chunk, the first in the first.
A request goes to the back of the line after each decode, so a batch of thousands of inputs
takes turns with the requests that came after it.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import llama_cpp as llama
import numpy as np
import psutil

from workers import protocol
from workers.llm import LoadedModel
from workers.render_pool import RenderStopped, RenderTimeout

log = logging.getLogger("corral.worker")

# How a causal model's chunks make the input's vector, by llama.cpp pooling type.
_POOLED_CHUNKS = {llama.LLAMA_POOLING_TYPE_MEAN: "mean", llama.LLAMA_POOLING_TYPE_LAST: "last",
                  llama.LLAMA_POOLING_TYPE_CLS: "first"}


@dataclass
class EmbedJob:
    job_id: int
    inputs: list[str | list[int]]
    truncate: bool
    vectors: list[list[float]] = field(default_factory=list)
    ready: deque[list[int]] = field(default_factory=deque)  # tokenized, not yet decoded
    tokenizing: bool = False
    pos: int = 0  # a causal model: tokens of ready[0] already decoded
    total: np.ndarray | None = None  # a causal model: the pooled chunks of ready[0] so far
    counted: int = 0  # tokens over all inputs


Offload = Callable[[int, Callable[[], list[list[int]]]], None]  # (job id, work) to a side thread


class Embeddings:
    def __init__(self, model: LoadedModel, send: Callable[[protocol.FromWorker], None],
                 offload: Offload) -> None:
        self.model = model
        self._send = send
        self._offload = offload
        self._jobs: dict[int, EmbedJob] = {}  # the line: insertion order

    @property
    def has_work(self) -> bool:
        return any(j.ready for j in self._jobs.values())

    def __contains__(self, job_id: int) -> bool:
        return job_id in self._jobs

    def add(self, req: protocol.Embed) -> None:
        if self.model.pooling not in _POOLED_CHUNKS:
            self._send(protocol.Failed(req.job_id, "this model does not give pooled embeddings",
                                       kind="bad_request"))
            return
        job = EmbedJob(req.job_id, list(req.inputs), req.truncate)
        self._jobs[job.job_id] = job
        self._tokenize_more(job)

    def cancel(self, job_id: int) -> None:
        if self._jobs.pop(job_id, None) is not None:
            self.model.end_embedding()

    def fail_all(self, message: str) -> None:
        for job_id in list(self._jobs):
            self.cancel(job_id)
            self._send(protocol.Failed(job_id, message))

    def tokens_ready(self, job_id: int, outcome: object) -> None:
        job = self._jobs[job_id]
        job.tokenizing = False
        if isinstance(outcome, BaseException):
            if isinstance(outcome, RenderStopped):
                return  # cancelled
            del self._jobs[job_id]
            bad_request = isinstance(outcome, (ValueError, RenderTimeout))
            self._send(protocol.Failed(job_id, str(outcome) or "tokenizing took too long",
                                       kind="bad_request" if bad_request else "internal"))
            return
        assert isinstance(outcome, list)
        job.ready.extend(outcome)

    def _tokenize_more(self, job: EmbedJob) -> None:
        """On a side thread: the next input of a causal model (a 10 MB input takes seconds),
        or every input of an encoder's request (each at most its context)."""
        done = len(job.vectors) + len(job.ready)
        take = 1 if self.model.causal else len(job.inputs) - done
        texts, model, truncate = job.inputs[done:done + take], self.model, job.truncate
        job.tokenizing = True
        self._offload(job.job_id, lambda: [model.embedding_tokens(t, truncate) for t in texts])

    def step(self) -> None:
        """One decode: the input a causal model has begun (its cells are in the embedding
        context until it ends), else for the first request in line with tokens ready."""
        ready = [j for j in self._jobs.values() if j.ready]
        if not ready:
            return
        job = next((j for j in ready if j.pos > 0), ready[0])
        try:
            if self.model.causal:
                self._chunk(job)
            else:
                self._whole(job)
        except Exception as exc:  # noqa: BLE001 - fail this request, keep the worker
            self.cancel(job.job_id)
            self._send(protocol.Failed(job.job_id, str(exc), kind="bad_request"
                                       if isinstance(exc, ValueError) else "internal"))
            return
        if len(job.vectors) == len(job.inputs):
            self.cancel(job.job_id)
            self._send(protocol.Embedded(job.job_id, job.vectors, job.counted,
                                         self.model.embed_memory))
            return
        if job.pos == 0:
            self._jobs[job.job_id] = self._jobs.pop(job.job_id)  # to the back of the line
        if not job.ready and not job.tokenizing:
            self._tokenize_more(job)

    def _whole(self, job: EmbedJob) -> None:
        """As many whole inputs as one encoder decode holds, each its own sequence."""
        model, pack, size = self.model, [], 0
        while job.ready and len(pack) < model.embed_sequences and (
                not pack or size + len(job.ready[0]) <= model.embed_batch):
            pack.append(job.ready.popleft())
            size += len(pack[-1])
        for tokens, vector in zip(pack, self._measured(lambda: model.embed(pack))):
            self._done(job, vector, len(tokens))
        model.end_embedding()

    def _chunk(self, job: EmbedJob) -> None:
        """The next chunk of a causal model's input."""
        model, tokens = self.model, job.ready[0]
        chunk = tokens[job.pos: job.pos + model.embed_batch]
        if chunk:
            [vector] = self._measured(lambda: model.embed([chunk], job.pos))
            how = _POOLED_CHUNKS[model.pooling]
            if how == "mean":
                vector = vector * len(chunk) + (0 if job.total is None else job.total)
            job.total = vector
            # The first token's state needs nothing after it: one chunk is the whole answer.
            job.pos = len(tokens) if how == "first" else job.pos + len(chunk)
        if job.pos < len(tokens):
            return
        job.ready.popleft()
        total, n = job.total, len(tokens)
        job.total, job.pos = None, 0
        if total is None:
            total = np.zeros(model.n_embd)
        elif _POOLED_CHUNKS[model.pooling] == "mean":
            total = total / n
        self._done(job, total, n)
        model.end_embedding()

    def _measured(self, embed: Callable[[], list[np.ndarray]]) -> list[np.ndarray]:
        """`embed()`, noting the memory the embedding context took on its first use."""
        model = self.model
        before = psutil.Process().memory_info().rss if model.embed_memory == 0 else 0
        vectors = embed()
        if before:
            model.embed_memory = max(psutil.Process().memory_info().rss - before, 1)
        return vectors

    @staticmethod
    def _done(job: EmbedJob, vector: np.ndarray, tokens: int) -> None:
        if not np.all(np.isfinite(vector)):
            raise RuntimeError("embedding contains non-finite values")
        job.vectors.append(vector.tolist())
        job.counted += tokens
