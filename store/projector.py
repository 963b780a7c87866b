"""Projector (mmproj) GGUFs: which GGUF of a create is one, by Ollama's rule, and whether
llama.cpp's mtmd can read its metadata at all.

llama.cpp's `tools/mtmd/clip.cpp` reads each key with the `gguf_get_val_*` of the type it
expects, and those abort the whole process on any other type (arrays it checks itself, with an
error). So a projector only counts once every key that clip.cpp reads has exactly that type;
`_READ_AS` is the list, taken from clip.cpp's `get_u32`/`get_i32`/`get_f32`/`get_bool`/
`get_string`/`get_arr_*` calls and the key names in `clip-impl.h`.
"""

from __future__ import annotations

from typing import Any

from store.errors import InvalidInput
from store.gguf import GGUFInfo

# The `%s` of clip.cpp's per-modality keys (KEY_N_EMBD, ...).
_MODALITIES = ("vision", "audio", "gen.audio")
_PER_MODALITY = {
    "embedding_length": "u32", "feed_forward_length": "u32", "block_count": "u32",
    "projection_dim": "u32", "attention.head_count": "u32", "attention.head_count_kv": "u32",
    "attention.head_dim": "u32", "attention.layer_norm_epsilon": "f32",
    "feature_layer": "arr[i32]",
}
_READ_AS: dict[str, str] = {
    **{f"clip.{m}.{key}": kind for m in _MODALITIES for key, kind in _PER_MODALITY.items()},
    **dict.fromkeys(("general.name", "general.description", "clip.projector_type",
                     "clip.vision.projector_type", "clip.audio.projector_type",
                     "clip.gen.audio.projector_type", "clip.gen.audio.model_variant",
                     "clip.vision.mm_patch_merge_type"), "str"),
    **dict.fromkeys(("clip.has_vision_encoder", "clip.has_audio_encoder",
                     "clip.has_gen_audio_encoder", "clip.use_gelu", "clip.use_silu"), "bool"),
    "clip.minicpmv_version": "i32",
    "clip.vision.swiglu_clamp": "f32",
    **dict.fromkeys(("clip.vision.image_mean", "clip.vision.image_std"), "arr[f32]"),
    **dict.fromkeys(("clip.vision.image_grid_pinpoints", "clip.vision.wa_layer_indexes",
                     "clip.vision.wa_pattern_mode", "clip.vision.projector.spatial_offsets",
                     "clip.audio.wa_pattern_mode", "clip.audio.rvq.codebook_size"), "arr[i32]"),
    **dict.fromkeys((
        "clip.minicpmv_query_num", "clip.vision.image_size", "clip.vision.patch_size",
        "clip.vision.image_min_pixels", "clip.vision.image_max_pixels",
        "clip.vision.preproc_image_size", "clip.vision.preproc_min_tiles",
        "clip.vision.preproc_max_tiles", "clip.vision.projector.scale_factor",
        "clip.vision.projector.query_side", "clip.vision.projector.window_side",
        "clip.vision.spatial_merge_size", "clip.vision.n_wa_pattern", "clip.vision.window_size",
        "clip.vision.sam.block_count", "clip.vision.sam.embedding_length",
        "clip.vision.sam.head_count", "clip.vision.expert_used_count",
        "clip.audio.num_mel_bins", "clip.audio.subsampling_factor", "clip.audio.chunk_size",
        "clip.audio.conv_kernel_size", "clip.audio.max_pos_emb", "clip.audio.window_size",
        "clip.audio.projector.stack_factor", "clip.audio.projector.window_size",
        "clip.audio.projector.downsample_rate", "clip.audio.projector.head_count",
        "clip.audio.rvq.num_quantizers", "clip.audio.local_block_count",
        "clip.audio.local_group_size"), "u32"),
}


def is_projector(info: GGUFInfo) -> bool:
    """Ollama's isProjectorGGUF (server/create.go): general.type says so, or the file has a
    vision tower but no language blocks, or it is a `clip` file with an encoder. As Ollama's
    typed getters, a count counts only as a u32 and a flag only as a bool."""
    kind = info.metadata.get("general.type") if info.types.get("general.type") == "str" else ""
    if kind in ("projector", "mmproj"):
        return True
    arch = info.architecture
    if not _u32(info, f"{arch}.block_count") and _u32(info, f"{arch}.vision.block_count") > 0:
        return True
    return arch == "clip" and not _u32(info, f"{arch}.block_count") and (
        _flag(info, f"{arch}.has_vision_encoder") or _flag(info, f"{arch}.has_audio_encoder"))


def check_projector(info: GGUFInfo, filename: str) -> None:
    """InvalidInput unless llama.cpp can read every key of the projector it reads, each in the
    type it reads it as."""
    for key, kind in _READ_AS.items():
        found = info.types.get(key)
        if found is not None and found != kind:
            raise InvalidInput(f"projector {filename}: metadata {key} is of type {found}, "
                               f"llama.cpp reads it as {kind}")


def _u32(info: GGUFInfo, key: str) -> Any:
    return info.metadata[key] if info.types.get(key) == "u32" else 0


def _flag(info: GGUFInfo, key: str) -> bool:
    return info.types.get(key) == "bool" and info.metadata[key] is True
