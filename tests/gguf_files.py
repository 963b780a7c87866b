"""Hand-built GGUF headers for tests: well-formed ones, and ones that lie about their sizes."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def kv_string(key: str, value: str) -> bytes:
    return string(key) + struct.pack("<I", 8) + string(value)


def kv_u32(key: str, value: int) -> bytes:
    return string(key) + struct.pack("<I", 4) + struct.pack("<I", value)


def tensor(name: str, dims: list[int], ggml_type: int = 0, offset: int = 0) -> bytes:
    return (string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
            + struct.pack("<IQ", ggml_type, offset))


def gguf(kvs: list[bytes], tensors: list[bytes], data: bytes = b"") -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(tensors)
    return head + b"\0" * (-len(head) % 32) + data


def one_block_model(block_count: int = 1, data: bytes = b"\0" * 64) -> bytes:
    """A llama-architecture header with one 4x4 F32 tensor in block 0 (64 bytes of data)."""
    return gguf([kv_string("general.architecture", "llama"), kv_u32("llama.block_count", block_count)],
                [tensor("blk.0.attn_q.weight", [4, 4])], data)


def tiny_llama_f16(path: Path, chat_template: str | None = None) -> Path:
    """A real, loadable llama-architecture model of 3 MB with random F16 weights (for quantizing),
    written with the gguf package; optionally with a Jinja chat template."""
    import gguf as gguf_package  # noqa: PLC0415

    n_embd, n_ff, n_vocab, n_layer = 256, 512, 512, 2
    writer = gguf_package.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(4)
    writer.add_head_count_kv(4)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(64)
    writer.add_file_type(1)  # F16
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"t{i}".encode() for i in range(n_vocab)])
    writer.add_token_scores([0.0] * n_vocab)
    writer.add_token_types([1] * n_vocab)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    rng = np.random.default_rng(0)

    def weight(name: str, shape: tuple[int, int]) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float16))

    def norm(name: str) -> None:
        writer.add_tensor(name, np.ones(n_embd, dtype=np.float32))

    weight("token_embd.weight", (n_vocab, n_embd))
    norm("output_norm.weight")
    weight("output.weight", (n_vocab, n_embd))
    for i in range(n_layer):
        norm(f"blk.{i}.attn_norm.weight")
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            weight(f"blk.{i}.{part}.weight", (n_embd, n_embd))
        norm(f"blk.{i}.ffn_norm.weight")
        weight(f"blk.{i}.ffn_gate.weight", (n_ff, n_embd))
        weight(f"blk.{i}.ffn_up.weight", (n_ff, n_embd))
        weight(f"blk.{i}.ffn_down.weight", (n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def gemma_lora(path: Path, seed: int = 0) -> Path:
    """A LoRA adapter for Gemma 3 270M (rank 8 on every attn_q) with random weights large enough
    to change what the model says."""
    import gguf as gguf_package  # noqa: PLC0415

    writer = gguf_package.GGUFWriter(str(path), "gemma3")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 8.0)
    rng, rank = np.random.default_rng(seed), 8
    for block in range(18):
        name = f"blk.{block}.attn_q.weight"
        writer.add_tensor(f"{name}.lora_a", (rng.standard_normal((rank, 640)) * 0.5).astype(np.float32))
        writer.add_tensor(f"{name}.lora_b", (rng.standard_normal((1024, rank)) * 0.5).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# The tiny projector's shape (see tiny_clip_projector).
PROJECTOR_IMAGE_SIZE, PROJECTOR_PATCH_SIZE = 32, 8
PROJECTOR_IMAGE_TOKENS = (PROJECTOR_IMAGE_SIZE // PROJECTOR_PATCH_SIZE) ** 2  # 16


def tiny_clip_projector(path: Path, text_width: int = 640, seed: int = 0,
                        retype: dict[str, int] | None = None) -> Path:
    """A llava `mlp` projector (mmproj) GGUF that llama.cpp's mtmd loads, with random weights:
    a CLIP vision tower of 2 blocks (the llava graph runs all but the last), hidden 64, 4 heads,
    32x32 images in 8x8 patches (16 image positions), and mm.0/mm.2 projecting to `text_width`
    (640: Gemma 3 270M). Its metadata has exactly the types clip.cpp reads (UINT32 integers,
    FLOAT32 epsilon, FLOAT32 mean/std arrays, BOOL flags), since a wrong one aborts the process
    inside gguf_get_val_*. `retype` writes the named keys with another GGUF value type (a
    gguf.GGUFValueType; for mean/std, their items' type) to make a file that must be refused."""
    import gguf as gguf_package  # noqa: PLC0415

    value_type = gguf_package.GGUFValueType
    n_embd, n_ff, n_head, n_layer = 64, 128, 4, 2
    n_patches = PROJECTOR_IMAGE_TOKENS
    writer = gguf_package.GGUFWriter(str(path), "clip")
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    kvs: list[tuple[str, object, int]] = [  # key, value, type (an array's: its items' type)
        ("general.type", "mmproj", value_type.STRING),
        ("clip.has_vision_encoder", True, value_type.BOOL),
        ("clip.projector_type", "mlp", value_type.STRING),
        ("clip.use_gelu", True, value_type.BOOL),
        ("clip.vision.image_size", PROJECTOR_IMAGE_SIZE, value_type.UINT32),
        ("clip.vision.patch_size", PROJECTOR_PATCH_SIZE, value_type.UINT32),
        ("clip.vision.embedding_length", n_embd, value_type.UINT32),
        ("clip.vision.feed_forward_length", n_ff, value_type.UINT32),
        ("clip.vision.block_count", n_layer, value_type.UINT32),
        ("clip.vision.projection_dim", text_width, value_type.UINT32),
        ("clip.vision.attention.head_count", n_head, value_type.UINT32),
        ("clip.vision.attention.layer_norm_epsilon", 1e-6, value_type.FLOAT32),
        ("clip.vision.image_mean", mean, value_type.FLOAT32),
        ("clip.vision.image_std", std, value_type.FLOAT32),
    ]
    for key, value, vtype in kvs:
        vtype = value_type((retype or {}).get(key, vtype))
        if isinstance(value, list):
            writer.add_key_value(key, value, value_type.ARRAY, sub_type=vtype)
        else:
            writer.add_key_value(key, value, vtype)
    rng = np.random.default_rng(seed)

    def add(name: str, shape: tuple[int, ...], std: float = 0.02) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * std).astype(np.float32))

    def ones(name: str, n: int) -> None:
        writer.add_tensor(name, np.ones(n, dtype=np.float32))

    add("v.patch_embd.weight", (n_embd, 3, PROJECTOR_PATCH_SIZE, PROJECTOR_PATCH_SIZE))
    add("v.patch_embd.bias", (n_embd,))
    add("v.position_embd.weight", (n_patches, n_embd))
    ones("v.pre_ln.weight", n_embd)
    add("v.pre_ln.bias", (n_embd,))
    for i in range(n_layer):
        for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
            add(f"v.blk.{i}.{part}.weight", (n_embd, n_embd))
            add(f"v.blk.{i}.{part}.bias", (n_embd,))
        for norm in ("ln1", "ln2"):
            ones(f"v.blk.{i}.{norm}.weight", n_embd)
            add(f"v.blk.{i}.{norm}.bias", (n_embd,))
        add(f"v.blk.{i}.ffn_up.weight", (n_ff, n_embd))
        add(f"v.blk.{i}.ffn_up.bias", (n_ff,))
        add(f"v.blk.{i}.ffn_down.weight", (n_embd, n_ff))
        add(f"v.blk.{i}.ffn_down.bias", (n_embd,))
    add("mm.0.weight", (text_width, n_embd), n_embd ** -0.5)
    add("mm.0.bias", (text_width,))
    add("mm.2.weight", (text_width, text_width), text_width ** -0.5)
    add("mm.2.bias", (text_width,))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
