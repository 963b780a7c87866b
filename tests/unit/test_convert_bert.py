"""Converting all-MiniLM-L6-v2 from safetensors to GGUF gives what llama.cpp's own converter gives.

The expected tables below are read off llama.cpp's `convert_hf_to_gguf.py` (its `conversion/`
package: `BertModel` in bert.py, `TextModel`/`ModelBase` in base.py) and gguf-py
(`tensor_mapping.py`, `vocab.py`'s SpecialVocab, `metadata.py`), in the version vendored by
llama-cpp-python 0.3.36; that converter needs torch and transformers, so it is not run here.
The embeddings are checked against llama.cpp itself and against a numpy forward pass over the
original weights, which proves the conversion rather than only that it loads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import gguf
import llama_cpp as llama
import numpy as np
import pytest
from gguf.utility import SafetensorsLocal

from store.convert import ConvertError, detect, is_safetensors_dir
from store.convert.bert import ConvertResult, convert_bert
from store.convert.wordpiece import WordPiece
from tests.bert_files import (LlamaEmbedder, NumpyBert, extract_minilm, llama_embedder, model_meta,
                              write_16_bit_copy)

T = gguf.GGUFValueType
F32, F16 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16

SENTENCES = ["A man is playing a guitar.",
             "The stock market fell sharply today after the announcement.",
             "Hello, world! It's 9:30 a.m. (isn't it?)"]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_minilm(tmp_path_factory.mktemp("minilm"))


@pytest.fixture(scope="module")
def converted(minilm: Path, tmp_path_factory: pytest.TempPathFactory) -> ConvertResult:
    return convert_bert(minilm, tmp_path_factory.mktemp("out") / "all-minilm.gguf")


@pytest.fixture(scope="module")
def embedder(converted: ConvertResult) -> Iterator[LlamaEmbedder]:
    with llama_embedder(converted.path, n_seq=4) as e:
        yield e


@pytest.fixture(scope="module")
def numpy_bert(minilm: Path) -> NumpyBert:
    return NumpyBert(minilm, n_layer=6, n_head=12, eps=1e-12)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def linked_copy(src: Path, dst: Path) -> Path:
    """The model directory with every file symlinked, so a test can replace one cheaply."""
    for path in src.rglob("*"):
        if path.is_file():
            (dst / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dst / path.relative_to(src)).symlink_to(path)
    return dst


# ---- the file llama.cpp's converter writes --------------------------------------------------

# Every key, in the order the reference writes them (GGUFWriter's architecture, set_type,
# Metadata.set_gguf_meta_model, TextModel.set_gguf_parameters, BertModel.set_gguf_parameters,
# the quantization version, BertModel.set_vocab, SpecialVocab.add_to_gguf).
METADATA: list[tuple[str, T, object]] = [
    ("general.architecture", T.STRING, "bert"),
    ("general.type", T.STRING, "model"),
    # gguf.Metadata's heuristics on config.json's "_name_or_path" (nreimers/MiniLM-L6-H384-uncased)
    # and the directory's name (all-MiniLM-L6-v2).
    ("general.name", T.STRING, "MiniLM L6 H384 Uncased"),
    ("general.version", T.STRING, "v2"),
    ("general.organization", T.STRING, "Nreimers"),
    ("general.basename", T.STRING, "all-MiniLM-L6"),
    ("general.size_label", T.STRING, "23M"),  # 22,565,376 parameters in the written tensors
    ("bert.block_count", T.UINT32, 6),
    ("bert.context_length", T.UINT32, 512),
    ("bert.embedding_length", T.UINT32, 384),
    ("bert.feed_forward_length", T.UINT32, 1536),
    ("bert.attention.head_count", T.UINT32, 12),
    ("bert.attention.layer_norm_epsilon", T.FLOAT32, np.float32(1e-12)),
    ("general.file_type", T.UINT32, 1),  # --outtype auto on F32 weights: MOSTLY_F16
    ("bert.attention.causal", T.BOOL, False),
    ("bert.pooling_type", T.UINT32, 1),  # 1_Pooling/config.json: pooling_mode_mean_tokens
    ("general.quantization_version", T.UINT32, 2),
    ("tokenizer.ggml.token_type_count", T.UINT32, 2),  # type_vocab_size
    ("tokenizer.ggml.model", T.STRING, "bert"),
    # The probe-text hash 0876d13b... is listed as "bert-bge" and, later, as "jina-v2-en";
    # the later assignment wins in get_vocab_base_pre. llama.cpp ignores it for WordPiece.
    ("tokenizer.ggml.pre", T.STRING, "jina-v2-en"),
    ("tokenizer.ggml.tokens", T.ARRAY, 30522),
    ("tokenizer.ggml.token_type", T.ARRAY, 30522),
    # SpecialVocab: BOS/EOS stand in as [CLS]/[SEP]; no writer method exists for cls_token_id.
    ("tokenizer.ggml.bos_token_id", T.UINT32, 101),
    ("tokenizer.ggml.eos_token_id", T.UINT32, 102),
    ("tokenizer.ggml.unknown_token_id", T.UINT32, 100),
    ("tokenizer.ggml.seperator_token_id", T.UINT32, 102),
    ("tokenizer.ggml.padding_token_id", T.UINT32, 0),
    ("tokenizer.ggml.mask_token_id", T.UINT32, 103),
    # TemplateProcessing "[CLS] $A [SEP]" / "[CLS] $A [SEP] $B [SEP]".
    ("tokenizer.ggml.add_bos_token", T.BOOL, True),
    ("tokenizer.ggml.add_eos_token", T.BOOL, True),
    ("tokenizer.ggml.add_sep_token", T.BOOL, False),
    ("tokenizer.ggml.normalizer.lowercase", T.BOOL, True),  # BertNormalizer; strip_accents null
]

# tensor_mapping.py for MODEL_ARCH.BERT: checkpoint name, llama.cpp name, shape as GGUF stores it
# (ggml order, innermost first) and type (prepare_tensors: 1-D, norms, biases, positions and
# token types in F32; the other matrices in the F16 of --outtype auto). The order is the
# checkpoint's names sorted, as the safetensors reader lists them ("LayerNorm" before "dense").
EMBEDDING_TENSORS = [
    ("embeddings.LayerNorm.bias", "token_embd_norm.bias", [384], F32),
    ("embeddings.LayerNorm.weight", "token_embd_norm.weight", [384], F32),
    ("embeddings.position_embeddings.weight", "position_embd.weight", [384, 512], F32),
    ("embeddings.token_type_embeddings.weight", "token_types.weight", [384, 2], F32),
    ("embeddings.word_embeddings.weight", "token_embd.weight", [384, 30522], F16),
]
LAYER_TENSORS = [
    ("attention.output.LayerNorm.bias", "attn_output_norm.bias", [384], F32),
    ("attention.output.LayerNorm.weight", "attn_output_norm.weight", [384], F32),
    ("attention.output.dense.bias", "attn_output.bias", [384], F32),
    ("attention.output.dense.weight", "attn_output.weight", [384, 384], F16),
    ("attention.self.key.bias", "attn_k.bias", [384], F32),
    ("attention.self.key.weight", "attn_k.weight", [384, 384], F16),
    ("attention.self.query.bias", "attn_q.bias", [384], F32),
    ("attention.self.query.weight", "attn_q.weight", [384, 384], F16),
    ("attention.self.value.bias", "attn_v.bias", [384], F32),
    ("attention.self.value.weight", "attn_v.weight", [384, 384], F16),
    ("intermediate.dense.bias", "ffn_up.bias", [1536], F32),
    ("intermediate.dense.weight", "ffn_up.weight", [384, 1536], F16),
    ("output.LayerNorm.bias", "layer_output_norm.bias", [384], F32),
    ("output.LayerNorm.weight", "layer_output_norm.weight", [384], F32),
    ("output.dense.bias", "ffn_down.bias", [384], F32),
    ("output.dense.weight", "ffn_down.weight", [1536, 384], F16),
]
# Dropped, as BertModel.filter_tensors drops them: embeddings.position_ids, pooler.dense.*.
TENSORS = EMBEDDING_TENSORS + [(f"encoder.layer.{n}.{hf}", f"blk.{n}.{name}", shape, kind)
                               for n in range(6) for hf, name, shape, kind in LAYER_TENSORS]


def test_metadata_is_what_llama_cpps_converter_writes(converted: ConvertResult) -> None:
    fields = gguf.GGUFReader(converted.path).fields
    written = [(key, field.types[0], len(field.data) if field.types[0] == T.ARRAY else field.contents())
               for key, field in fields.items() if not key.startswith("GGUF.")]
    assert written == METADATA


def test_vocabulary_is_wordpiece_in_llama_cpps_phantom_space_form(converted: ConvertResult) -> None:
    fields = gguf.GGUFReader(converted.path).fields
    tokens, types = fields["tokenizer.ggml.tokens"].contents(), fields["tokenizer.ggml.token_type"].contents()
    # Word starts get "▁", "##" continuations lose their prefix, control tokens stay as they are.
    assert tokens[:2] == ["[PAD]", "▁[unused0]"] and types[:2] == [3, 1]
    assert tokens[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] and types[100:104] == [3, 3, 3, 3]
    assert tokens[1996] == "▁the" and tokens[2075] == "ing" and types[2075] == 1
    assert types.count(3) == 5 and types.count(1) == 30522 - 5


def test_tensors_are_named_shaped_typed_and_valued_as_llama_cpp_writes_them(
        converted: ConvertResult, minilm: Path) -> None:
    written = gguf.GGUFReader(converted.path).tensors
    assert [(t.name, [int(n) for n in t.shape], t.tensor_type) for t in written] \
        == [(name, shape, kind) for _, name, shape, kind in TENSORS]
    with SafetensorsLocal(minilm / "model.safetensors") as source:
        for (hf, _, _, kind), tensor in zip(TENSORS, written, strict=True):
            original = source[hf].mmap_bytes().view("<f4").reshape(source[hf].shape)
            assert np.array_equal(tensor.data, original.astype(np.float16 if kind == F16 else np.float32))
    assert (converted.tensors, converted.parameters, converted.file_type, converted.pooling) \
        == (101, 22_565_376, "F16", "MEAN")


def test_a_name_given_overrides_the_model_cards(minilm: Path, tmp_path: Path) -> None:
    result = convert_bert(minilm, tmp_path / "named.gguf", name="all-minilm")
    assert gguf.GGUFReader(result.path).fields["general.name"].contents() == "all-minilm"


# ---- llama.cpp loads it and computes the model ----------------------------------------------

def test_llama_cpp_loads_it_as_a_non_causal_mean_pooled_encoder(embedder: LlamaEmbedder) -> None:
    assert embedder.n_embd == 384
    assert llama.llama_model_n_ctx_train(embedder.model) == 512
    assert model_meta(embedder.model, "general.architecture") == "bert"
    assert llama.llama_pooling_type(embedder.ctx) == llama.LLAMA_POOLING_TYPE_MEAN
    assert not llama.llama_get_causal_attn(embedder.ctx)


@pytest.mark.parametrize("sentence", SENTENCES)
def test_embeddings_match_a_numpy_bert_forward_pass(sentence: str, embedder: LlamaEmbedder,
                                                    numpy_bert: NumpyBert) -> None:
    (embedding,) = embedder.embed(sentence)
    assert cosine(embedding, numpy_bert.embed(embedder.tokenize(sentence))) >= 0.9999  # F16 weights


@pytest.mark.parametrize("sentence", [*SENTENCES, "Café naïve RÉSUMÉ — Ünïcödé!",
                                      "我想在apple工作 3.14 e-mail: foo@bar.com",
                                      "  tabs\tand\nnewlines  "])
def test_llama_cpp_tokenizes_as_the_models_tokenizer_json(sentence: str, embedder: LlamaEmbedder,
                                                          minilm: Path) -> None:
    wordpiece = WordPiece.from_tokenizer_json(json.loads((minilm / "tokenizer.json").read_text()))
    assert embedder.tokenize(sentence) == wordpiece.encode(sentence)  # [CLS] ... [SEP] included


def test_a_paraphrase_is_closer_than_an_unrelated_sentence(embedder: LlamaEmbedder) -> None:
    guitar, paraphrase, market = embedder.embed("A man is playing a guitar.",
                                                "Someone plays an acoustic guitar on stage.",
                                                "The stock market fell sharply today.")
    assert cosine(guitar, paraphrase) > cosine(guitar, market) + 0.3


def test_sequences_decoded_together_embed_as_they_do_alone(embedder: LlamaEmbedder) -> None:
    together = embedder.embed(*SENTENCES)
    for sentence, embedding in zip(SENTENCES, together, strict=True):
        assert cosine(embedding, embedder.embed(sentence)[0]) > 0.99999


def test_a_cls_pooled_model_is_pooled_by_its_cls_token(minilm: Path, tmp_path: Path,
                                                       numpy_bert: NumpyBert) -> None:
    model = linked_copy(minilm, tmp_path / "cls")
    (model / "1_Pooling" / "config.json").unlink()
    (model / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 384, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    result = convert_bert(model, tmp_path / "cls.gguf")
    assert result.pooling == "CLS"
    with llama_embedder(result.path) as cls_embedder:
        assert llama.llama_pooling_type(cls_embedder.ctx) == llama.LLAMA_POOLING_TYPE_CLS
        (embedding,) = cls_embedder.embed(SENTENCES[0])
        ids = cls_embedder.tokenize(SENTENCES[0])
    assert cosine(embedding, numpy_bert.embed(ids, pooling="cls")) >= 0.9999


@pytest.mark.parametrize("dtype", ["F16", "BF16"])
def test_a_16_bit_checkpoint_keeps_its_type_for_matrices_and_f32_for_the_rest(
        dtype: str, minilm: Path, tmp_path: Path, numpy_bert: NumpyBert) -> None:
    model = linked_copy(minilm, tmp_path / "model")
    (model / "model.safetensors").unlink()
    write_16_bit_copy(minilm / "model.safetensors", model / "model.safetensors", dtype)
    result = convert_bert(model, tmp_path / "model.gguf")
    assert result.file_type == dtype  # --outtype auto follows the checkpoint's 16-bit type
    matrix = gguf.GGMLQuantizationType[dtype]
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(result.path).tensors}
    assert [types[name] for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_q.bias",
                                     "blk.0.attn_output_norm.weight", "position_embd.weight")] \
        == [matrix, matrix, F32, F32, F32]
    with llama_embedder(result.path) as embedder16:
        (embedding,) = embedder16.embed(SENTENCES[0])
        ids = embedder16.tokenize(SENTENCES[0])
    assert cosine(embedding, numpy_bert.embed(ids)) >= 0.999  # against the float32 original


# ---- recognising a directory, and refusing what is not a BERT model -------------------------

def test_a_safetensors_directory_is_recognised_by_its_config_and_weights(minilm: Path, tmp_path: Path,
                                                                         converted: ConvertResult) -> None:
    assert is_safetensors_dir(minilm) and detect(minilm) == "BertModel"
    assert detect(tmp_path) is None and detect(converted.path) is None


def _without(name: str) -> Callable[[Path], None]:
    return lambda model: (model / name).unlink()


def _config(**changes: object) -> Callable[[Path], None]:
    def change(model: Path) -> None:
        config = json.loads((model / "config.json").read_text()) | changes
        (model / "config.json").unlink()
        (model / "config.json").write_text(json.dumps(config))
    return change


def _truncated_weights(model: Path) -> None:
    data = (model / "model.safetensors").read_bytes()[: 1 << 20]
    (model / "model.safetensors").unlink()
    (model / "model.safetensors").write_bytes(data)


@pytest.mark.parametrize(("damage", "message"), [
    (_without("config.json"), "config.json is missing"),
    (_without("tokenizer.json"), "tokenizer.json is missing"),
    (_without("model.safetensors"), "model.safetensors is missing"),
    (_without("1_Pooling/config.json"), "1_Pooling/config.json is missing"),
    (_config(architectures=["LlamaForCausalLM"]), "architecture 'LlamaForCausalLM' is not supported"),
    (_config(position_embedding_type="relative_key"), "position_embedding_type 'relative_key'"),
    (_config(num_hidden_layers=7), "missing tensors: blk.6."),
    (_config(hidden_size=None), "config.json lacks hidden_size"),
    (_config(vocab_size=30000), "tokenizer.json has token id 30521, config.json's vocab_size is 30000"),
    (_config(intermediate_size=1000), "tensor blk.0.ffn_up.bias has shape [1536], config.json implies [1000]"),
    (_truncated_weights, "malformed or out-of-range"),
], ids=["no-config", "no-tokenizer", "no-weights", "no-pooling-config", "llama", "relative-positions",
        "missing-layer", "no-hidden-size", "vocab-size", "ffn-size", "truncated-weights"])
def test_what_is_not_a_complete_bert_model_is_refused_naming_what_is_wrong(
        damage: Callable[[Path], None], message: str, minilm: Path, tmp_path: Path) -> None:
    model = linked_copy(minilm, tmp_path / "model")
    damage(model)
    with pytest.raises(ConvertError, match=re.escape(message)):
        convert_bert(model, tmp_path / "out" / "model.gguf")
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_a_write_that_fails_leaves_no_partial_file(minilm: Path, tmp_path: Path) -> None:
    (tmp_path / "taken.gguf").mkdir()  # the rename onto it fails after the file is written
    with pytest.raises(OSError):
        convert_bert(minilm, tmp_path / "taken.gguf")
    assert [p.name for p in tmp_path.iterdir()] == ["taken.gguf"]

