"""BERT encoders (all-MiniLM, bge, mxbai-embed-large, ...) from safetensors to GGUF.

This follows llama.cpp's converter step for step: `conversion/bert.py` (class `BertModel`) on
`TextModel` and `ModelBase` in `conversion/base.py`, with gguf-py's tensor map and key names.
What it writes, in the reference's order: general metadata (`gguf.Metadata`, as the reference
reads it from the model card and config), the hyperparameters, `bert.attention.causal = false`,
the sentence-transformers pooling, the WordPiece vocabulary in llama.cpp's "phantom space" form,
the special tokens, and the tensors renamed to llama.cpp's names. With the reference's default
`--outtype auto`, 2-D weights become F16 (BF16 if the checkpoint is bfloat16), while norms,
biases, the position and token-type embeddings stay F32.

Where the reference needs `transformers` (the tokenizer) we read `tokenizer.json` directly; the
pre-tokenizer name comes from the same hash of a probe text the reference computes
(`wordpiece.py` reproduces the tokenizer exactly enough to give the known hash).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import yaml

from store.convert import ConvertError
from store.convert.safetensors import Tensor, read_tensors
from store.convert.wordpiece import WordPiece

ARCHITECTURES = ("BertModel", "BertForMaskedLM")  # the MLM head is dropped, as the reference does

# gguf-py's tensor_mapping.py for MODEL_ARCH.BERT, restricted to what a BertModel holds.
_EMBEDDINGS = {"embeddings.word_embeddings": "token_embd", "embeddings.token_type_embeddings": "token_types",
               "embeddings.position_embeddings": "position_embd", "embeddings.LayerNorm": "token_embd_norm"}
_LAYER = {"attention.self.query": "attn_q", "attention.self.key": "attn_k", "attention.self.value": "attn_v",
          "attention.output.dense": "attn_output", "attention.output.LayerNorm": "attn_output_norm",
          "intermediate.dense": "ffn_up", "output.dense": "ffn_down", "output.LayerNorm": "layer_output_norm"}
_LAYER_NAME = re.compile(r"encoder\.layer\.(\d+)\.(.+)")
# Not needed for embeddings (BertModel.filter_tensors): the pooler and the pre-training heads.
_DROPPED = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")
_DROPPED_PREFIXES = ("cls.predictions", "cls.seq_relationship")
# Kept in F32 whatever the file type (ModelBase.prepare_tensors).
_F32_TENSORS = ("position_embd.weight", "token_types.weight")

# The probe text and the hashes of its token ids by which the reference names a WordPiece
# tokenizer's pre-tokenizer (get_vocab_base_pre). 0876d1... is listed for bge-small-en-v1.5
# ("bert-bge") and again later for jina-embeddings-v2-base-en, and the later one wins there.
_CHKTXT = ('\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ '
           '(multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 '
           '3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= '
           'нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, '
           '\'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL')
_PRE_TOKENIZERS = {"0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f": "jina-v2-en",
                   "8e62295832751ca1e8f92f2226f403dea30dc5165e448b5bfa05af5340c64ec7": "bert-bge-large"}

_SPECIAL_TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
# The keys SpecialVocab.add_to_gguf finds a writer method for. There is none for cls (the
# reference skips it with a warning; llama.cpp takes [CLS] as BOS) nor for add_unk and the like.
_TOKEN_ID_KEYS = {"bos": gguf.Keys.Tokenizer.BOS_ID, "eos": gguf.Keys.Tokenizer.EOS_ID,
                  "unk": gguf.Keys.Tokenizer.UNK_ID, "sep": gguf.Keys.Tokenizer.SEP_ID,
                  "pad": gguf.Keys.Tokenizer.PAD_ID, "mask": gguf.Keys.Tokenizer.MASK_ID}
_ADD_TOKEN_KEYS = {"bos": gguf.Keys.Tokenizer.ADD_BOS, "eos": gguf.Keys.Tokenizer.ADD_EOS,
                   "sep": gguf.Keys.Tokenizer.ADD_SEP}
# Written from BertNormalizer by llama.cpp's gguf-py, newer than some `gguf` releases.
_KEY_LOWERCASE = "tokenizer.ggml.normalizer.lowercase"
_KEY_STRIP_ACCENTS = "tokenizer.ggml.normalizer.strip_accents"


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion wrote."""

    path: Path
    size: int  # bytes
    tensors: int
    parameters: int
    file_type: str  # "F16" or "BF16"
    pooling: str | None  # "MEAN", "CLS", "LAST", or None when the directory names no pooling


@dataclass(frozen=True)
class _Vocab:
    pre: str  # tokenizer.ggml.pre
    tokens: list[str]
    types: list[int]
    token_ids: dict[str, int]  # special tokens by kind (bos, eos, ...), in the reference's order
    add_tokens: dict[str, bool]  # add_bos, add_eos, add_sep
    normalizer: dict[str, bool]  # tokenizer.ggml.normalizer.* keys


@dataclass(frozen=True)
class _Hparams:
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_ctx: int
    norm_eps: float
    n_vocab: int
    n_token_types: int


def convert_bert(src: Path, dst: Path, *, name: str | None = None) -> ConvertResult:
    """Writes `src`, a Hugging Face BERT directory, as a GGUF file at `dst` (atomically: a temp
    file beside it, renamed). `name` overrides `general.name` (the reference's --model-name)."""
    # Everything is read and checked before anything is converted.
    config = _read_json(src, "config.json")
    hparams = _hparams(config)
    vocab = _read_vocab(src, config, hparams.n_vocab)
    tensors = _model_tensors(src, hparams)
    pooling = _pooling_type(src)
    file_type = _file_type(tensors.values())

    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    for gguf_name, tensor in tensors.items():
        data = tensor.load()
        qtype = _tensor_type(gguf_name, data.ndim, file_type)
        writer.add_tensor(gguf_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    parameters = writer.get_total_parameter_count()

    writer.add_type(gguf.GGUFType.MODEL)
    _metadata(src, name, parameters).set_gguf_meta_model(writer)
    _add_hparams(writer, hparams, file_type)
    writer.add_causal_attention(False)
    if pooling is not None:
        writer.add_pooling_type(pooling)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_vocab(writer, vocab, hparams.n_token_types)

    size = _write_atomically(writer, dst)
    return ConvertResult(dst, size, len(tensors), parameters[0], file_type.name.partition("_")[2],
                         pooling.name if pooling is not None else None)


def _read_json(src: Path, name: str) -> Any:
    path = src / name
    if not path.is_file():
        raise ConvertError(f"{src}: {name} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise ConvertError(f"{src}: {name} is not readable JSON: {e}") from e


def _hparams(config: Any) -> _Hparams:
    if not isinstance(config, dict):
        raise ConvertError("config.json is not a JSON object")
    architectures = config.get("architectures")
    architecture = architectures[0] if isinstance(architectures, list) and architectures else None
    if architecture not in ARCHITECTURES:
        raise ConvertError(f"architecture {architecture!r} is not supported; corral converts "
                           + " and ".join(ARCHITECTURES))
    # llama.cpp's BERT graph knows absolute position embeddings and a GELU feed-forward only.
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ConvertError(f"position_embedding_type {config['position_embedding_type']!r} is not "
                           "supported (llama.cpp's BERT uses absolute positions)")
    if config.get("hidden_act", "gelu") not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
        raise ConvertError(f"hidden_act {config['hidden_act']!r} is not supported "
                           "(llama.cpp's BERT uses GELU)")
    keys = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
            "max_position_embeddings", "vocab_size")
    if missing := [key for key in keys if not isinstance(config.get(key), int) or config[key] <= 0]:
        raise ConvertError(f"config.json lacks {', '.join(missing)}")
    eps = config.get("layer_norm_eps")
    if not isinstance(eps, (int, float)):
        raise ConvertError("config.json lacks layer_norm_eps")
    types = config.get("type_vocab_size", 1)  # the reference's default
    if config["hidden_size"] % config["num_attention_heads"] or not isinstance(types, int) or types <= 0:
        raise ConvertError("config.json: hidden_size must be a multiple of num_attention_heads, "
                           "type_vocab_size a positive integer")
    return _Hparams(config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"],
                    config["num_attention_heads"], config["max_position_embeddings"], float(eps),
                    config["vocab_size"], types)


def _model_tensors(src: Path, hp: _Hparams) -> dict[str, Tensor]:
    """The weights under llama.cpp's names, in the reference's order (parts, then names sorted),
    after checking that they are exactly a BertModel of the configured size."""
    tensors: dict[str, Tensor] = {}
    for part in _part_files(src):
        for hf_name, tensor in read_tensors(part).items():
            if (gguf_name := _gguf_name(hf_name)) is not None:
                tensors[gguf_name] = tensor
    expected = _expected_shapes(hp)
    if missing := [n for n in expected if n not in tensors]:
        raise ConvertError(f"{src}: not a complete BertModel, missing tensors: {', '.join(missing[:6])}"
                           + (f" and {len(missing) - 6} more" if len(missing) > 6 else ""))
    for gguf_name, tensor in tensors.items():
        if gguf_name not in expected:
            raise ConvertError(f"{src}: tensor {gguf_name} is beyond the {hp.n_layer} layers "
                               "config.json names")
        if tensor.shape != expected[gguf_name]:
            raise ConvertError(f"{src}: tensor {gguf_name} has shape {list(tensor.shape)}, "
                               f"config.json implies {list(expected[gguf_name])}")
    return tensors


def _part_files(src: Path) -> list[Path]:
    """model*.safetensors, or the files model.safetensors.index.json lists (get_model_part_names)."""
    index = src / "model.safetensors.index.json"
    if index.is_file():
        index_json = _read_json(src, index.name)
        weight_map = index_json.get("weight_map") if isinstance(index_json, dict) else None
        if not isinstance(weight_map, dict):
            raise ConvertError(f"{src}: {index.name} has no weight_map")
        names = sorted(set(map(str, weight_map.values())))
        if missing := [n for n in names if "/" in n or not (src / n).is_file()]:
            raise ConvertError(f"{src}: weight files missing: {', '.join(missing)}")
    else:
        names = sorted(p.name for p in src.glob("model*.safetensors"))
        if not names:
            raise ConvertError(f"{src}: model.safetensors is missing")
    return [src / n for n in names]


def _gguf_name(hf_name: str) -> str | None:
    """llama.cpp's name for a checkpoint tensor, None for one the reference drops."""
    name = hf_name.removeprefix("bert.")
    name = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))
    if name in _DROPPED or name.startswith(_DROPPED_PREFIXES):
        return None
    module, _, suffix = name.rpartition(".")
    if suffix in ("weight", "bias"):
        if module in _EMBEDDINGS:
            return f"{_EMBEDDINGS[module]}.{suffix}"
        if (layer := _LAYER_NAME.fullmatch(module)) and layer[2] in _LAYER:
            return f"blk.{int(layer[1])}.{_LAYER[layer[2]]}.{suffix}"
    raise ConvertError(f"tensor {hf_name!r} is not part of a BertModel")


def _expected_shapes(hp: _Hparams) -> dict[str, tuple[int, ...]]:
    """Every tensor a BertModel has, with its shape in the checkpoint's (row-major) order."""
    e, f = hp.n_embd, hp.n_ff
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (hp.n_vocab, e), "token_types.weight": (hp.n_token_types, e),
        "position_embd.weight": (hp.n_ctx, e), "token_embd_norm.weight": (e,), "token_embd_norm.bias": (e,)}
    for n in range(hp.n_layer):
        for short in ("attn_q", "attn_k", "attn_v", "attn_output"):
            shapes |= {f"blk.{n}.{short}.weight": (e, e), f"blk.{n}.{short}.bias": (e,)}
        for short in ("attn_output_norm", "layer_output_norm"):
            shapes |= {f"blk.{n}.{short}.weight": (e,), f"blk.{n}.{short}.bias": (e,)}
        shapes |= {f"blk.{n}.ffn_up.weight": (f, e), f"blk.{n}.ffn_up.bias": (f,),
                   f"blk.{n}.ffn_down.weight": (e, f), f"blk.{n}.ffn_down.bias": (e,)}
    return shapes


def _file_type(tensors: Iterable[Tensor]) -> gguf.LlamaFileType:
    """--outtype auto: the first 16-bit matrix decides between BF16 and F16; F32 becomes F16."""
    for tensor in tensors:
        if len(tensor.shape) >= 2 and tensor.dtype in ("BF16", "F16"):
            return gguf.LlamaFileType.MOSTLY_BF16 if tensor.dtype == "BF16" else gguf.LlamaFileType.MOSTLY_F16
    return gguf.LlamaFileType.MOSTLY_F16


def _tensor_type(gguf_name: str, ndim: int, file_type: gguf.LlamaFileType) -> gguf.GGMLQuantizationType:
    if ndim <= 1 or gguf_name.endswith("_norm.weight") or gguf_name in _F32_TENSORS \
            or not gguf_name.endswith(".weight"):
        return gguf.GGMLQuantizationType.F32
    if file_type == gguf.LlamaFileType.MOSTLY_BF16:
        return gguf.GGMLQuantizationType.BF16
    return gguf.GGMLQuantizationType.F16


def _pooling_type(src: Path) -> gguf.PoolingType | None:
    """The sentence-transformers Pooling module's mode (TextModel._try_set_pooling_type)."""
    if not (src / "modules.json").is_file():
        return None
    modules = _read_json(src, "modules.json")
    pooling_modules = [m for m in modules if isinstance(m, dict) and str(m.get("type")).endswith("Pooling")] \
        if isinstance(modules, list) else []
    path = pooling_modules[0].get("path") if pooling_modules else None
    if not isinstance(path, str):
        return None
    if not re.fullmatch(r"[\w.-]+", path) or path.startswith("."):
        raise ConvertError(f"modules.json: pooling module path {path!r} is not a folder of the model")
    pooling = _read_json(src, f"{path}/config.json")
    if not isinstance(pooling, dict):
        raise ConvertError(f"{path}/config.json is not a JSON object")
    modes = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "lasttoken": gguf.PoolingType.LAST}
    if pooling.get("pooling_mode_mean_tokens"):
        return gguf.PoolingType.MEAN
    if pooling.get("pooling_mode_cls_token"):
        return gguf.PoolingType.CLS
    if pooling.get("pooling_mode_lasttoken"):
        return gguf.PoolingType.LAST
    if pooling.get("pooling_mode") in modes:
        return modes[pooling["pooling_mode"]]
    raise ConvertError(f"{path}/config.json: only mean, CLS and last-token pooling are supported")


def _metadata(src: Path, name: str | None, parameters: tuple[int, int, int, int]) -> gguf.Metadata:
    """general.* as the reference derives them (model card, config.json's _name_or_path)."""
    try:
        metadata = gguf.Metadata.load(None, src, name, parameters[0])
    except (ValueError, OSError, TypeError, AttributeError, yaml.YAMLError) as e:  # README.md's front matter
        raise ConvertError(f"{src}: unreadable model card: {e}") from e
    if metadata.name is None:
        metadata.name = src.name
    if metadata.size_label is None and parameters[0] > 0:
        metadata.size_label = gguf.size_label(*parameters)
    return metadata


def _add_hparams(writer: gguf.GGUFWriter, hp: _Hparams, file_type: gguf.LlamaFileType) -> None:
    writer.add_block_count(hp.n_layer)
    writer.add_context_length(hp.n_ctx)
    writer.add_embedding_length(hp.n_embd)
    writer.add_feed_forward_length(hp.n_ff)
    writer.add_head_count(hp.n_head)
    writer.add_layer_norm_eps(hp.norm_eps)
    writer.add_file_type(file_type)


def _read_vocab(src: Path, config: dict[str, Any], n_vocab: int) -> _Vocab:
    """What BertModel.set_vocab writes: the vocabulary with phantom spaces, the pre-tokenizer's
    name, and gguf.SpecialVocab's special tokens and normalizer flags."""
    tokenizer = _read_json(src, "tokenizer.json")
    try:
        wordpiece = WordPiece.from_tokenizer_json(tokenizer)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConvertError(f"{src}: tokenizer.json is not a BERT WordPiece tokenizer: {e}") from e
    digest = hashlib.sha256(str(wordpiece.encode(_CHKTXT)).encode()).hexdigest()
    if digest not in _PRE_TOKENIZERS:
        raise ConvertError(f"{src}: tokenizer not recognised by llama.cpp's converter "
                           f"(pre-tokenizer hash {digest})")
    tokens, types = _vocab(tokenizer, n_vocab)
    settings = _read_json(src, "tokenizer_config.json") if (src / "tokenizer_config.json").is_file() else {}
    token_ids, add_tokens = _special_tokens(tokenizer, settings, config, n_vocab)
    normalizer = tokenizer.get("normalizer") or {}
    flags = {_KEY_LOWERCASE: normalizer.get("lowercase"), _KEY_STRIP_ACCENTS: normalizer.get("strip_accents")}
    return _Vocab(_PRE_TOKENIZERS[digest], tokens, types, token_ids, add_tokens,
                  {key: bool(value) for key, value in flags.items() if value is not None})


def _add_vocab(writer: gguf.GGUFWriter, vocab: _Vocab, n_token_types: int) -> None:
    writer.add_token_type_count(n_token_types)
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    for kind, token_id in vocab.token_ids.items():
        if kind in _TOKEN_ID_KEYS:
            writer.add_uint32(_TOKEN_ID_KEYS[kind], token_id)
    for kind, value in vocab.add_tokens.items():
        if kind in _ADD_TOKEN_KEYS:
            writer.add_bool(_ADD_TOKEN_KEYS[kind], value)
    for key, value in vocab.normalizer.items():
        writer.add_bool(key, value)


def _vocab(tokenizer: dict[str, Any], n_vocab: int) -> tuple[list[str], list[int]]:
    """TextModel.get_vocab_base and BertModel's phantom-space rewrite: "##ing" becomes "ing",
    "play" becomes "▁play", control tokens stay as they are; holes become [PAD<id>]."""
    added = {t["content"]: t for t in tokenizer.get("added_tokens") or []}
    by_id = {token_id: token for token, token_id in tokenizer["model"]["vocab"].items()}
    by_id |= {t["id"]: token for token, t in added.items()}
    if max(by_id, default=0) >= n_vocab:
        raise ConvertError(f"tokenizer.json has token id {max(by_id)}, config.json's vocab_size is {n_vocab}")
    tokens: list[str] = []
    types: list[int] = []
    for token_id in range(n_vocab):
        token = by_id.get(token_id)
        if token is None:
            token, kind = f"[PAD{token_id}]", gguf.TokenType.UNUSED
        elif token in added:
            kind = gguf.TokenType.CONTROL if added[token].get("special") or _looks_special(token) \
                else gguf.TokenType.USER_DEFINED
            if kind == gguf.TokenType.USER_DEFINED:
                token = token.replace("\u2581", " ")
        else:
            kind = gguf.TokenType.NORMAL
        if kind != gguf.TokenType.CONTROL:
            token = token[2:] if token.startswith("##") else "\u2581" + token
        tokens.append(token)
        types.append(int(kind))
    return tokens, types


def _looks_special(token: str) -> bool:
    """TextModel.does_token_look_special: added tokens some models forget to mark special."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or any(token.startswith(start) and token.endswith(end)
                   for start, end in (("<|", "|>"), ("<｜", "｜>"), ("<unused", ">"))))


def _special_tokens(tokenizer: dict[str, Any], tokenizer_config: Any, config: dict[str, Any],
                    n_vocab: int) -> tuple[dict[str, int], dict[str, bool]]:
    """gguf.SpecialVocab for a BERT tokenizer: the ids of bos/eos/unk/sep/pad/cls/mask and the
    add_bos/add_eos/add_sep flags, read as the reference reads them (tokenizer_config.json's
    token strings looked up among tokenizer.json's added tokens, then config.json's *_token_id;
    the flags from the post-processor's TemplateProcessing)."""
    settings = tokenizer_config if isinstance(tokenizer_config, dict) else {}
    # Token strings by role; an entry may be an AddedToken object with the string as "content".
    names = {kind: entry.get("content") if isinstance(entry, dict) else entry
             for kind in _SPECIAL_TYPES if isinstance(entry := settings.get(f"{kind}_token"), (str, dict))}
    # BERT names [CLS] and [SEP] only: they stand in for BOS and EOS.
    for role, stand_in in (("bos", "cls"), ("eos", "sep")):
        if not names.get(role) and names.get(stand_in):
            names[role] = names[stand_in]
    add = _template_flags(tokenizer.get("post_processor") or {}, names)
    ids: dict[str, int] = {}
    added = tokenizer.get("added_tokens") or []
    for kind in _SPECIAL_TYPES:
        if isinstance(flag := settings.get(f"add_{kind}_token"), bool):
            add.setdefault(kind, flag)
        token_id = next((t.get("id") for t in added if t.get("content") == names[kind]), None) \
            if isinstance(names.get(kind), str) else None
        if isinstance(token_id, int) and 0 <= token_id < n_vocab:
            ids.setdefault(kind, token_id)
    for kind in _SPECIAL_TYPES:
        token_id = config.get(f"{kind}_token_id")
        if isinstance(token_id, int) and 0 <= token_id < n_vocab:
            ids.setdefault(kind, token_id)
    return ids, add


def _template_flags(processor: dict[str, Any], names: dict[str, Any]) -> dict[str, bool]:
    """SpecialVocab's reading of a simple TemplateProcessing: a leading BOS/CLS means add_bos, a
    trailing EOS/SEP add_eos, and a SEP between the pair's sequences (when nothing trails the
    single one) add_sep. Where tokenizer_config.json names no BOS or EOS (`names`), the
    template's own first and last tokens are taken as such."""
    if processor.get("type") != "TemplateProcessing":
        return {}
    single, pair = processor.get("single") or [], processor.get("pair") or []
    first, last = (_special(single[0]), _special(single[-1])) if len(single) > 1 else (None, None)
    bos = names.get("bos") or first
    eos = names.get("eos") or last
    if last is not None and last != eos:
        raise ConvertError(f"tokenizer.json: the template ends in {last!r}, not the separator {eos!r}")
    flags: dict[str, bool] = {}
    if first is not None:
        flags["bos"] = first in (bos, names.get("cls"))
    if last is not None:
        flags["eos"] = True
    start = 1 if first is not None and pair and _special(pair[0]) == first else 0
    stop = -1 if last is not None and pair and _special(pair[-1]) == last else None
    middle = pair[start:stop]
    if len(middle) > 2 and middle[0].get("Sequence", {}).get("id") == "A" \
            and middle[-1].get("Sequence", {}).get("id") == "B":
        separators = {token for token in (names.get("sep"), eos) if token}
        inner = [_special(item) for item in middle[1:-1]]
        flags["sep"] = inner[0] in separators and last is None or len(inner) == 2 and inner[1] in separators
    return flags


def _special(item: dict[str, Any]) -> str | None:
    return item.get("SpecialToken", {}).get("id")


def _write_atomically(writer: gguf.GGUFWriter, dst: Path) -> int:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.partial")
    try:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return dst.stat().st_size
