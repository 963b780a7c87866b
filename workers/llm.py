"""One loaded model in a worker: llama.cpp weights, the shared decode context, the tokenizer.

A draft model (workers/draft_model.py), where the model has one, is loaded beside it on the same
devices, with a context of as many cells and sequences.

The decode context holds up to `slots` sequences of up to `num_ctx` tokens each in one KV cache
of `kv_cells` cells that they share (the engine admits sequences while cells are free), so every
active request of this model is decoded in the same `llama_decode` call. Embeddings use
a second, lazily created context with mean pooling, fed a chunk at a time, so they never disturb
decoding sequences.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time

import llama_cpp as llama
import numpy as np

from workers.draft_model import DraftModel
from workers.kvcache import LlamaMemory
from workers.protocol import DRAFT_UBATCH, Load
from workers.vision import Projector


_FLASH = {None: llama.LLAMA_FLASH_ATTN_TYPE_AUTO, True: llama.LLAMA_FLASH_ATTN_TYPE_ENABLED,
          False: llama.LLAMA_FLASH_ATTN_TYPE_DISABLED}
_KV_TYPES = {"f16": llama.GGML_TYPE_F16, "q8_0": llama.GGML_TYPE_Q8_0, "q4_0": llama.GGML_TYPE_Q4_0}
# Inputs one encoder decode holds at most: a power of two, as llama.cpp needs the context to
# be a multiple of it; short inputs (a sentence each) then share a decode.
ENCODER_SEQUENCES = 16


log = logging.getLogger("corral.worker")


class LoadError(RuntimeError):
    pass


class LoadedModel:
    def __init__(self, req: Load, n_threads: int) -> None:
        start = time.perf_counter_ns()
        self.model_id = req.model_id
        self.num_ctx = req.num_ctx
        self.slots = req.slots
        self.n_threads = req.n_threads or n_threads
        self._flash_attention = req.flash_attention
        self._kv_cache_type = req.kv_cache_type
        self.batch_tokens = req.batch_tokens
        self.gpu = req.n_gpu_layers > 0
        mparams = llama.llama_model_default_params()
        mparams.n_gpu_layers = req.n_gpu_layers
        mparams.main_gpu = req.main_gpu
        if req.use_mmap is not None:
            mparams.use_mmap = req.use_mmap
        if req.tensor_split:  # the placement's split, not llama.cpp's guess from free memory
            split = (ctypes.c_float * llama.LLAMA_MAX_DEVICES)(*req.tensor_split)
            mparams.tensor_split = split
            self._tensor_split = split  # llama.cpp reads it during the load: keep it alive
        self.model = llama.llama_model_load_from_file(req.path.encode(), mparams)
        if not self.model:
            raise LoadError(f"unable to load model: {req.path}")
        self.vocab = llama.llama_model_get_vocab(self.model)
        self.projector: Projector | None = None
        if req.projector:
            try:
                self.projector = Projector(req.projector, self.model, self.n_threads, self.gpu)
            except ValueError as exc:
                llama.llama_model_free(self.model)
                raise LoadError(str(exc)) from None
        self._projector_size = os.path.getsize(req.projector) if req.projector else 0
        self._piece_buf = ctypes.create_string_buffer(256)
        self._adapters = [self._load_adapter(path) for path in req.adapters]
        self.kv_cells = req.kv_cells or req.num_ctx * req.slots
        self.ctx = self._new_context(self.model, self.kv_cells, req.slots, embeddings=False)
        self.batch = llama.llama_batch_init(self.batch_tokens, 0, 1)
        self._embed_ctx: llama.llama_context_p | None = None
        self._embed_batch: llama.llama_batch | None = None
        self.embed_memory = 0  # bytes the embedding context took, measured on its first use
        self.n_embd = llama.llama_model_n_embd(self.model)
        self.n_vocab = llama.llama_vocab_n_tokens(self.vocab)
        self.chat_template = self._meta("tokenizer.chat_template")
        arch = self._meta("general.architecture")
        declared = self._meta(f"{arch}.pooling_type")
        # An embedding model says how it pools; a generative one is averaged (mean pooling).
        self.pooling = int(declared) if declared.isdigit() else llama.LLAMA_POOLING_TYPE_MEAN
        self.pooling_declared = declared.isdigit()
        # An encoder (BERT) sees its whole input at once: it cannot take it in chunks.
        self.causal = self._meta(f"{arch}.attention.causal") != "false"
        self.n_ctx_train = llama.llama_model_n_ctx_train(self.model)
        self.bos_text = self.piece(llama.llama_vocab_bos(self.vocab), special=True).decode(errors="replace")
        self.adds_bos = bool(llama.llama_vocab_get_add_bos(self.vocab))  # to a tokenized prompt
        self.eos_text = self.piece(llama.llama_vocab_eos(self.vocab), special=True).decode(errors="replace")
        self.draft: DraftModel | None = None
        if req.draft and req.speculative != "off" and not req.batch_invariant:
            self.draft = self._load_draft(req.draft, req.main_gpu)
        self.load_duration = time.perf_counter_ns() - start

    def _load_draft(self, path: str, main_gpu: int) -> DraftModel | None:
        """The draft model, all on the GPU where any of the model is (it is the small one); None,
        logged, where it cannot draft alone: Ollama's drafts are MTP or DFlash heads that read
        the model's hidden state, which llama.cpp runs only inside llama-server."""
        mparams = llama.llama_model_default_params()
        mparams.n_gpu_layers = 999 if self.gpu else 0
        mparams.main_gpu = main_gpu
        model = llama.llama_model_load_from_file(path.encode(), mparams)
        if not model:
            log.warning("the draft model %s does not load on its own: no drafts from it", path)
            return None
        try:
            ctx = self._new_context(model, self.kv_cells, self.slots, embeddings=False,
                                    ubatch=DRAFT_UBATCH)
        except LoadError:
            llama.llama_model_free(model)
            log.warning("no context for the draft model %s: no drafts from it", path)
            return None
        draft = DraftModel(model, ctx, self.batch_tokens)
        if why := draft.mismatch(self.vocab):
            draft.close()
            log.warning("the draft model %s cannot draft for this model (%s)", path, why)
            return None
        return draft

    def _new_context(self, model: llama.llama_model_p, n_ctx: int, n_seq: int,
                     embeddings: bool, ubatch: int = 0) -> llama.llama_context_p:
        """`ubatch`: tokens computed at once, when fewer than a decode takes (a draft model's
        context, whose compute buffer would otherwise hold logits for a whole batch)."""
        cparams = llama.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_seq_max = n_seq
        cparams.n_batch = cparams.n_ubatch = self.embed_batch if embeddings else self.batch_tokens
        if ubatch:
            cparams.n_ubatch = min(ubatch, cparams.n_batch)
        cparams.n_threads = self.n_threads
        cparams.n_threads_batch = self.n_threads
        cparams.embeddings = embeddings
        # One KV pool shared by all slots: llama.cpp then decodes a batch that mixes sequences
        # (in any order, prefill next to decode) as one ubatch; per-sequence streams split it,
        # which measured 1.6x slower for 4 sequences here. We cap each sequence at num_ctx.
        cparams.kv_unified = True
        if embeddings:
            cparams.pooling_type = (llama.LLAMA_POOLING_TYPE_UNSPECIFIED if self.pooling_declared
                                    else llama.LLAMA_POOLING_TYPE_MEAN)
        # Flash attention wherever llama.cpp has it unless OLLAMA_FLASH_ATTENTION says otherwise
        # (faster, as llama-server and Ollama run). Batch-invariant mode keeps it: one sequence
        # at a time in an emptied cache makes the numbers independent of other requests.
        cparams.flash_attn_type = _FLASH[self._flash_attention]
        if not embeddings:
            cparams.type_k = cparams.type_v = _KV_TYPES[self._kv_cache_type]
        ctx = llama.llama_init_from_model(model, cparams)
        if not ctx:
            raise LoadError("unable to create llama.cpp context (out of memory?)")
        if self._adapters and model == self.model:  # a draft model takes none
            count = len(self._adapters)
            adapters = (llama.llama_adapter_lora_p_ctypes * count)(*self._adapters)
            scales = (ctypes.c_float * count)(*([1.0] * count))
            if llama.llama_set_adapters_lora(ctx, adapters, count, scales) != 0:
                llama.llama_free(ctx)
                raise LoadError("unable to apply the LoRA adapters")
        return ctx

    def _load_adapter(self, path: str) -> llama.llama_adapter_lora_p:
        adapter = llama.llama_adapter_lora_init(self.model, path.encode())
        if not adapter:
            raise LoadError(f"unable to load LoRA adapter {path} (does it match the model?)")
        return adapter

    def _meta(self, key: str) -> str:
        buf = ctypes.create_string_buffer(1 << 16)
        n = llama.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            n = llama.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode(errors="replace") if n >= 0 else ""

    @property
    def weights_size(self) -> int:
        """The weights llama.cpp holds, the projector's and the draft model's included."""
        draft = int(llama.llama_model_size(self.draft.model)) if self.draft else 0
        return int(llama.llama_model_size(self.model)) + self._projector_size + draft

    # ---- tokens and text -----------------------------------------------------------------

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        data = text.encode()
        cap = len(data) + 8
        arr = (llama.llama_token * cap)()
        n = llama.llama_tokenize(self.vocab, data, len(data), arr, cap, add_bos, True)
        if n < 0:
            arr = (llama.llama_token * -n)()
            n = llama.llama_tokenize(self.vocab, data, len(data), arr, -n, add_bos, True)
        return list(arr[:n])

    def piece(self, token: int, special: bool = False) -> bytes:
        buf = self._piece_buf
        n = llama.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def logits(self, index: int) -> np.ndarray:
        """The raw logits of batch output `index`, as a view (valid until the next decode)."""
        return np.ctypeslib.as_array(llama.llama_get_logits_ith(self.ctx, index),
                                     shape=(self.n_vocab,))

    def is_eog(self, token: int) -> bool:
        return bool(llama.llama_vocab_is_eog(self.vocab, token))

    # ---- embeddings ----------------------------------------------------------------------

    @property
    def embed_ctx(self) -> int:
        """Tokens an embedding input may hold: the context, and for an encoder no more than it
        was trained for (a position past that aborts llama.cpp)."""
        return self.num_ctx if self.causal else min(self.num_ctx, self.n_ctx_train)

    @property
    def embed_batch(self) -> int:
        """Tokens per embedding decode. An encoder takes whole inputs. A causal model takes an
        input in chunks, with the earlier ones in its cache: llama.cpp computes the output layer
        for every pooled token (262k logits each for Gemma), so on the CPU a small chunk keeps a
        step short and its buffers near 100 MB."""
        if not self.causal:
            return self.embed_ctx
        return 512 if self.gpu else 64

    @property
    def embed_sequences(self) -> int:
        """Inputs one encoder decode may hold (llama.cpp wants the context a multiple of it)."""
        return ENCODER_SEQUENCES if not self.causal and self.embed_ctx % ENCODER_SEQUENCES == 0 \
            else 1

    def embedding_tokens(self, text: str | list[int], truncate: bool) -> list[int]:
        if isinstance(text, list):  # token ids given by the client
            bad = next((t for t in text if not 0 <= t < self.n_vocab), None)
            if bad is not None:
                raise ValueError(f"token {bad} is out of range for this model")
        tokens = list(text) if isinstance(text, list) else self.tokenize(text, True)
        if len(tokens) > self.embed_ctx:
            if not truncate:
                raise ValueError("the input length exceeds the context length")
            tokens = tokens[: self.embed_ctx]
        return tokens

    def embed(self, inputs: list[list[int]], pos: int = 0) -> list[np.ndarray]:
        """The pooled embedding of each input, decoded together (each its own sequence). A
        causal model's input may come in chunks: `pos` is where this one starts, the earlier
        ones being in the cache (one input then; llama.cpp pools over this decode's tokens)."""
        if self._embed_ctx is None:
            self._embed_ctx = self._new_context(self.model, self.embed_ctx,
                                                self.embed_sequences, embeddings=True)
            self._embed_batch = llama.llama_batch_init(self.embed_batch, 0, 1)
        batch, n = self._embed_batch, 0
        for seq, tokens in enumerate(inputs):
            for i, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = pos + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = True
                n += 1
        batch.n_tokens = n
        if llama.llama_decode(self._embed_ctx, batch) != 0:
            raise RuntimeError("llama_decode failed while embedding")
        return [np.ctypeslib.as_array(llama.llama_get_embeddings_seq(self._embed_ctx, seq),
                                      shape=(self.n_embd,)).astype(np.float64)
                for seq in range(len(inputs))]

    def end_embedding(self) -> None:
        """Clears the embedding cache for the next input."""
        if self._embed_ctx is not None:
            LlamaMemory(self._embed_ctx).clear(data=True)

    def close(self) -> None:
        if self.projector is not None:
            self.projector.close()
        if self.draft is not None:
            self.draft.close()
            self.draft = None
        llama.llama_batch_free(self.batch)
        if self._embed_ctx is not None:
            llama.llama_batch_free(self._embed_batch)
            llama.llama_free(self._embed_ctx)
        llama.llama_free(self.ctx)
        for adapter in self._adapters:
            llama.llama_adapter_lora_free(adapter)
        llama.llama_model_free(self.model)
