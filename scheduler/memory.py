"""What a model will take, and where, before it is loaded: from its GGUF header alone.

llama.cpp puts a model's memory in four places (each checked against its own log on Gemma 3 270M
with 16384 KV cells for 32 slots: weights 235 MiB, KV 288 MiB, compute 514.5 MiB, output 32 MiB):
- weights: each repeating block (`blk.N.*`) on the device of its layer; the token embeddings in
  host memory always (the input layer stays on the CPU); the output head on the GPU only when
  every block is there (n_gpu_layers > blocks), and a model with tied embeddings gets a copy of
  the embeddings for it;
- the KV cache: bytes per cell times the cells, each layer's share on its layer's device;
- the compute buffer, sized for one ubatch (512 tokens unless `num_batch` says otherwise, see
  workers/protocol.py batch_tokens): logits for every token (n_vocab floats each) or, without
  flash attention, the attention scores; the allocator reuses memory between them, so the larger
  of the two counts (4 x 512 x (262144 + 2 x 640) bytes for Gemma at 512 tokens);
- the output buffer: one row of logits per slot, in host memory.
With layers on both sides, both the GPU and the CPU get a compute buffer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

UBATCH = 512  # the worker's n_ubatch with num_batch's default
FLOAT = 4
# OLLAMA_KV_CACHE_TYPE: bytes per element of the K and V caches (ggml's block sizes: q8_0 is 34
# bytes per 32 elements, q4_0 18); the same memory holds 1.9x (q8_0) or 3.6x (q4_0) the cells.
KV_CACHE_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


def kv_cell_scale(cache_type: str) -> float:
    """A cell's size in this cache type, against f16's."""
    return KV_CACHE_BYTES[cache_type] / KV_CACHE_BYTES["f16"]


@dataclass(frozen=True)
class ModelMemory:
    """A model's sizes as its GGUF header gives them; built by the front end from the store."""

    layers: tuple[int, ...]  # weight bytes of each repeating block, in order
    input_bytes: int  # token embeddings
    output_bytes: int  # the output head and final norm
    tied_output: bool  # the head is the token embeddings: a GPU holding it gets a copy of them
    kv_bytes_per_cell: int  # over all layers, in the server's KV cache type
    n_embd: int
    n_head: int
    n_vocab: int
    projector_bytes: int = 0  # a vision projector's weights, on the GPU with the layers
    draft_bytes: int = 0  # a draft model's weights and compute buffer, on the GPU with the layers
    draft_kv_bytes_per_cell: int = 0  # ... and its KV cache, of as many cells as the model's

    @property
    def all_layers(self) -> int:
        """n_gpu_layers that puts everything llama.cpp can offload on the GPU."""
        return len(self.layers) + 1


@dataclass(frozen=True)
class Estimate:
    """Bytes a loaded model holds on the GPU (all of its GPUs when split) and in host RAM."""

    gpu_layers: int  # what the worker passes llama.cpp as n_gpu_layers
    weights_gpu: int
    weights_ram: int
    kv_gpu: int
    kv_ram: int
    compute_gpu: int
    compute_ram: int

    @property
    def vram(self) -> int:
        return self.weights_gpu + self.kv_gpu + self.compute_gpu

    @property
    def ram(self) -> int:
        return self.weights_ram + self.kv_ram + self.compute_ram

    @property
    def total(self) -> int:
        return self.vram + self.ram

    def with_weights(self, actual: int) -> Estimate:
        """The estimate with the weights llama.cpp reports after loading (the header's sizes can
        miss what it repacks or skips), shared between GPU and RAM as the header's were."""
        estimated = self.weights_gpu + self.weights_ram
        gpu = actual * self.weights_gpu // estimated if estimated else 0
        return replace(self, weights_gpu=gpu, weights_ram=actual - gpu)


def estimate(model: ModelMemory, kv_cells: int, slots: int, gpu_layers: int,
             flash_attention: bool = True, ubatch: int = UBATCH) -> Estimate:
    n = len(model.layers)
    gpu_layers = max(0, min(gpu_layers, model.all_layers))
    on_gpu = min(gpu_layers, n)
    head_on_gpu = gpu_layers > n
    layer_kv = model.kv_bytes_per_cell * kv_cells // n if n else 0
    compute = compute_bytes(model, kv_cells, flash_attention, ubatch)
    head = model.output_bytes + (model.input_bytes if model.tied_output else 0)
    # The worker loads the projector and the draft model on the GPU whenever any layer is there
    # (workers/llm.py).
    extra = model.projector_bytes + model.draft_bytes
    extra_gpu = extra if gpu_layers else 0
    draft_kv = model.draft_kv_bytes_per_cell * kv_cells
    weights_gpu = sum(model.layers[n - on_gpu:]) + (head if head_on_gpu else 0) + extra_gpu
    weights_ram = (model.input_bytes + sum(model.layers[:n - on_gpu])
                   + (0 if head_on_gpu else model.output_bytes) + extra - extra_gpu)
    return Estimate(
        gpu_layers=gpu_layers,
        weights_gpu=weights_gpu,
        weights_ram=weights_ram,
        kv_gpu=layer_kv * on_gpu + (draft_kv if gpu_layers else 0),
        kv_ram=layer_kv * (n - on_gpu) + (0 if gpu_layers else draft_kv),
        compute_gpu=compute if gpu_layers else 0,
        compute_ram=(compute if not head_on_gpu else 0) + FLOAT * slots * model.n_vocab,
    )


def logits_bytes(n_vocab: int, n_embd: int, ubatch: int = UBATCH) -> int:
    """The compute buffer with flash attention: the output layer's result for a ubatch."""
    return FLOAT * ubatch * (n_vocab + 2 * n_embd)


def compute_bytes(model: ModelMemory, kv_cells: int, flash_attention: bool,
                  ubatch: int = UBATCH) -> int:
    logits = logits_bytes(model.n_vocab, model.n_embd, ubatch)
    if flash_attention:
        return logits
    scores = FLOAT * ubatch * (1 + 4 * model.n_embd + kv_cells * (1 + model.n_head))
    return max(logits, scores)


def fit_layers(model: ModelMemory, kv_cells: int, slots: int, vram_free: int,
               flash_attention: bool = True, ubatch: int = UBATCH) -> int:
    """The most layers whose share (with the compute buffer) fits in `vram_free`; 0: none."""
    best = 0
    for layers in range(1, model.all_layers + 1):
        if estimate(model, kv_cells, slots, layers, flash_attention, ubatch).vram > vram_free:
            break
        best = layers
    return best
