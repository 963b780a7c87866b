"""Embeddings of one loaded model: its requests in line, a chunk of one input per step.

Inputs are tokenized on side threads, then computed a chunk per engine step in the
model's embedding context (llm.py), so a long input never stalls generation and never needs
more than a chunk's memory. An input's vector is the mean over its chunks weighted by their
length. A request goes to the back of the line after each input, so a batch of thousands of
inputs takes turns with the requests that came after it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import psutil

from workers import protocol
from workers.llm import LoadedModel
from workers.render_pool import RenderStopped, RenderTimeout

log = logging.getLogger("corral.worker")


@dataclass
class EmbedJob:
    job_id: int
    inputs: list[str | list[int]]
    truncate: bool
    vectors: list[list[float]] = field(default_factory=list)
    tokens: list[int] | None = None  # the current input's, once tokenized (a side thread)
    pos: int = 0  # tokens of the current input already decoded
    total: np.ndarray | None = None  # sum of chunk means weighted by chunk length
    counted: int = 0  # tokens over all inputs


Tokenize = Callable[[int, Callable[[], list[int]]], None]  # (job id, work) for a side thread


class Embeddings:
    def __init__(self, model: LoadedModel, send: Callable[[protocol.FromWorker], None],
                 tokenize: Tokenize) -> None:
        self.model = model
        self._send = send
        self._tokenize = tokenize
        self._jobs: dict[int, EmbedJob] = {}  # the line: insertion order

    @property
    def has_work(self) -> bool:
        return any(j.tokens is not None for j in self._jobs.values())

    def __contains__(self, job_id: int) -> bool:
        return job_id in self._jobs

    def add(self, req: protocol.Embed) -> None:
        job = EmbedJob(req.job_id, list(req.inputs), req.truncate)
        self._jobs[job.job_id] = job
        self._tokenize_next(job)

    def cancel(self, job_id: int) -> None:
        if self._jobs.pop(job_id, None) is not None:
            self.model.end_embedding()

    def fail_all(self, message: str) -> None:
        for job_id in list(self._jobs):
            self.cancel(job_id)
            self._send(protocol.Failed(job_id, message))

    def tokens_ready(self, job_id: int, outcome: object) -> None:
        job = self._jobs[job_id]
        if isinstance(outcome, BaseException):
            if isinstance(outcome, RenderStopped):
                return  # cancelled
            del self._jobs[job_id]
            bad_request = isinstance(outcome, (ValueError, RenderTimeout))
            self._send(protocol.Failed(job_id, str(outcome) or "tokenizing took too long",
                                       kind="bad_request" if bad_request else "internal"))
            return
        assert isinstance(outcome, list)
        job.tokens, job.pos = outcome, 0
        job.total = np.zeros(self.model.n_embd, dtype=np.float64)

    def _tokenize_next(self, job: EmbedJob) -> None:
        """Tokenizes the job's next input on a side thread: a 10 MB input takes seconds."""
        text, model, truncate = job.inputs[len(job.vectors)], self.model, job.truncate
        self._tokenize(job.job_id, lambda: model.embedding_tokens(text, truncate))

    def step(self) -> None:
        """Decodes the next chunk: of the input already begun (its cells are in the embedding
        context until it ends), else of the first ready job in line."""
        ready = [j for j in self._jobs.values() if j.tokens is not None]
        if not ready:
            return
        job = next((j for j in ready if j.pos > 0), ready[0])
        try:
            self._advance(job)
        except Exception as exc:  # noqa: BLE001 - fail this request, keep the worker
            self.cancel(job.job_id)
            self._send(protocol.Failed(job.job_id, str(exc), kind="bad_request"
                                       if isinstance(exc, ValueError) else "internal"))
            return
        if len(job.vectors) == len(job.inputs):
            self.cancel(job.job_id)
            self._send(protocol.Embedded(job.job_id, job.vectors, job.counted,
                                         self.model.embed_memory))
        elif job.tokens is None:
            self._jobs[job.job_id] = self._jobs.pop(job.job_id)  # to the back of the line
            self._tokenize_next(job)

    def _advance(self, job: EmbedJob) -> None:
        model = self.model
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
