"""The worker's dispatch: messages from the front end to the loaded models, steps to each.

Each loaded model has a `ModelBatcher` (batcher.py: its sequences, KV cache and steps) and its
`Embeddings` (embedding.py). Prompts, embedding inputs and wide grammars' passes are worked on
by side threads (side_threads.py; prompts render in render processes); `poll` hands what they
did to the model whose request it is. One engine step is one step of every model with work.
"""

from __future__ import annotations

import logging
from typing import Callable

from workers import prompt, protocol
from workers.batcher import ModelBatcher
from workers.embedding import Embeddings
from workers.llm import LoadedModel
from workers.protocol import Failed, Loaded, LoadFailed, Unloaded
from workers.render_pool import RenderPool
from workers.side_threads import GRAMMAR, PROMPT, SideThreads

log = logging.getLogger("corral.worker")

Send = Callable[[protocol.FromWorker], None]

UNLOAD_WAIT = 30.0  # seconds an unload waits for side threads still in a C call with the model


class Engine:
    def __init__(self, send: Send, n_threads: int) -> None:
        self._send = send
        self._n_threads = n_threads
        self.batchers: dict[str, ModelBatcher] = {}  # by model id
        self.embeddings: dict[str, Embeddings] = {}  # by model id
        self.side = SideThreads(RenderPool())

    @property
    def has_work(self) -> bool:
        """Whether a step would do something (requests whose prompt is being built do not)."""
        return any(b.has_work for b in self.batchers.values()) or any(
            e.has_work for e in self.embeddings.values())

    # ---- messages ----------------------------------------------------------------------------

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
            self.side.cancel(msg.job_id)
            for owner in (*self.batchers.values(), *self.embeddings.values()):
                owner.cancel(msg.job_id)
        elif isinstance(msg, protocol.Load):
            self._load(msg)
        elif isinstance(msg, protocol.Unload):
            self._unload(msg.model_id)
        elif isinstance(msg, protocol.Embed):
            self._embed(msg)
        elif isinstance(msg, protocol.Ping):
            self._send(protocol.Pong(msg.nonce))

    def _load(self, req: protocol.Load) -> None:
        batcher = self.batchers.get(req.model_id)
        if batcher is None:
            try:
                model = LoadedModel(req, self._n_threads)
            except Exception as exc:  # noqa: BLE001 - reported to the front end, worker lives on
                self._send(LoadFailed(req.model_id, str(exc)))
                return
            batcher = self.batchers[req.model_id] = ModelBatcher(
                model, req, self._send, lambda job_id, work: self.side.submit(GRAMMAR, job_id, work))
            self.embeddings[req.model_id] = Embeddings(
                model, self._send, lambda job_id, work: self.side.submit(PROMPT, job_id, work))
        model = batcher.model
        self._send(Loaded(req.model_id, model.load_duration, model.weights_size, model.gpu))

    def _unload(self, model_id: str) -> None:
        batcher = self.batchers.pop(model_id, None)
        embeddings = self.embeddings.pop(model_id, None)
        if batcher is not None and embeddings is not None:
            for job_id in batcher.fail_all("model was unloaded"):
                self.side.cancel(job_id)
            embeddings.fail_all("model was unloaded")
            # A side thread may still be in a C call (llama_tokenize, a grammar pass) with it.
            self.side.wait_until_idle(UNLOAD_WAIT)
            batcher.close()
            batcher.model.close()
        self._send(Unloaded(model_id))

    def _submit(self, req: protocol.Submit) -> None:
        batcher = self.batchers.get(req.model_id)
        if batcher is None:
            self._send(Failed(req.job_id, "model is not loaded"))
            return
        if batcher.full:
            self._send(Failed(req.job_id, "no free sequence slot"))
            return
        batcher.add(req)
        self.side.submit(PROMPT, req.job_id, prompt.preparation(
            req.job_id, req.prompt, req.format, req.format_prefix, batcher.model,
            self.side.renderers))

    def _embed(self, req: protocol.Embed) -> None:
        embeddings = self.embeddings.get(req.model_id)
        if embeddings is None:
            self._send(Failed(req.job_id, "model is not loaded"))
            return
        embeddings.add(req)

    def _fail(self, job_id: int, message: str) -> None:
        self.side.cancel(job_id)
        for owner in (*self.batchers.values(), *self.embeddings.values()):
            owner.cancel(job_id)
        self._send(Failed(job_id, message))

    # ---- the step loop -----------------------------------------------------------------------

    def poll(self) -> None:
        """Hands what the side threads did to the model whose request it is."""
        for (lane, job_id), outcome in self.side.results():
            batcher = next((b for b in self.batchers.values() if job_id in b), None)
            if lane == GRAMMAR:
                if batcher is not None:
                    batcher.sampled(job_id, outcome)
            elif batcher is not None:
                batcher.prompt_built(job_id, outcome)
            elif isinstance(outcome, prompt.Built):
                outcome.free()  # its request was cancelled while it was built
            else:
                embeddings = next((e for e in self.embeddings.values() if job_id in e), None)
                if embeddings is not None:
                    embeddings.tokens_ready(job_id, outcome)

    def step(self) -> None:
        for model_id, batcher in list(self.batchers.items()):
            embeddings = self.embeddings[model_id]
            if embeddings.has_work:
                embeddings.step()
            if batcher.has_work:
                batcher.step()

    def close(self) -> None:
        for batcher in self.batchers.values():
            for job_id in batcher.cancel_all():
                self.side.cancel(job_id)
        self.side.wait_until_idle(UNLOAD_WAIT)
        for batcher in self.batchers.values():
            batcher.close()
            batcher.model.close()
        self.batchers.clear()
        self.embeddings.clear()
        self.side.close()
