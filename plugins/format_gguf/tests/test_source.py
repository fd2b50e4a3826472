"""GGUF weights under Hugging Face names, the Q/K permutation undone, and the config from metadata.

The tiny fixtures were converted from random Hugging Face models by llama.cpp's own converter
(tools/make_gguf_fixtures.py); every tensor must come back equal to the HF original, bit for bit.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import TensorNameMap, MODEL_ARCH_NAMES

from gllm_core.errors import CorruptFileError, UnsupportedFormatError
from gllm_core.weights import WeightMatrix, WeightVector
from gllm_format_gguf.families import FAMILIES, hf_tensor_name
from gllm_format_gguf.source import GGUFSource, unpermute_rows
from tools.make_gguf_fixtures import checkpoint_weights

TINY = Path(__file__).parent / "fixtures" / "tiny"
FAMILIES_TESTED = ["llama", "qwen2", "qwen3", "qwen3moe"]


@pytest.mark.parametrize("family", FAMILIES_TESTED)
def test_every_tensor_equals_the_hf_original(family):
    src = GGUFSource(TINY / f"{family}.gguf")
    ref = checkpoint_weights(family, TINY)
    if family == "llama":  # tied: the converter writes no output.weight
        assert "lm_head.weight" not in src
        ref.pop("lm_head.weight")
    assert sorted(src.names()) == sorted(ref)
    for name, expected in ref.items():
        w = src.get(name)
        assert isinstance(w, WeightVector if expected.ndim == 1 else WeightMatrix)
        assert w.shape == expected.shape
        np.testing.assert_array_equal(w.to_float32(), expected, err_msg=name)


def test_llama_q_k_rows_were_permuted_in_the_file():
    src = GGUFSource(TINY / "llama.gguf")
    stored = src.raw("model.layers.0.self_attn.q_proj.weight")
    restored = src.get("model.layers.0.self_attn.q_proj.weight").to_float32()
    assert not np.array_equal(stored, restored)  # so the equality above is not vacuous
    # llama.cpp's LlamaModel.permute, applied to the restored rows, gives the stored ones back
    n_head = 4
    again = restored.reshape(n_head, 2, restored.shape[0] // n_head // 2, -1).swapaxes(1, 2).reshape(restored.shape)
    np.testing.assert_array_equal(again, stored)


def test_unpermute_checks_the_row_count():
    with pytest.raises(CorruptFileError):
        unpermute_rows(np.zeros((6, 4), np.float32), 4, "w")


@pytest.mark.parametrize("family", FAMILIES_TESTED)
def test_config_matches_the_hf_config(family):
    config = GGUFSource(TINY / f"{family}.gguf").model_config()
    hf = json.loads((TINY / f"{family}.config.json").read_text())
    assert list(config.architectures) == hf["architectures"]
    for field in ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "intermediate_size", "max_position_embeddings", "rms_norm_eps",
                  "tie_word_embeddings", "hidden_act"):
        assert getattr(config, field) == hf[field], field
    assert config.rope_theta == hf["rope_parameters"]["rope_theta"]
    assert config.head_dim == hf.get("head_dim", hf["hidden_size"] // hf["num_attention_heads"])
    if family == "qwen3moe":
        for field in ("num_local_experts", "num_experts_per_tok", "moe_intermediate_size", "norm_topk_prob"):
            assert config.raw[field] == hf[field], field
        assert config.raw["num_experts"] == hf["num_local_experts"]
    assert config.raw["general.architecture"] == family
    assert config.raw["attention_bias"] == (family == "qwen2")


def test_real_smollm2(smollm2_path):
    src = GGUFSource(smollm2_path)
    c = src.model_config()
    assert c.architectures == ("LlamaForCausalLM",) and c.model_type == "llama"
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (30, 576, 9, 3)
    assert (c.vocab_size, c.head_dim, c.intermediate_size, c.rope_theta) == (49152, 64, 1536, 100000.0)
    assert c.tie_word_embeddings and c.rms_norm_eps == 1e-5 and c.max_position_embeddings == 8192
    assert (c.bos_token_id, c.eos_token_id) == (1, 2)
    emb = src.get("model.embed_tokens.weight")
    assert emb.dtype == "q8_0" and emb.shape == (49152, 576) and emb.quant.name == "q8_0"
    q = src.get("model.layers.29.self_attn.q_proj.weight")
    assert q.dtype == "q4_1" and q.shape == (576, 576)
    k = src.get("model.layers.0.self_attn.k_proj.weight")
    assert k.shape == (192, 576)
    # rows come back in HF order: head h, pair i of the file holds HF rows i and i + 32 of that head
    stored, restored = src.raw("model.layers.0.self_attn.k_proj.weight"), k.data
    np.testing.assert_array_equal(restored[0], stored[0])
    np.testing.assert_array_equal(restored[32], stored[1])
    np.testing.assert_array_equal(restored[64 + 33], stored[64 + 3])
    assert "lm_head.weight" not in src
    assert src.get("model.norm.weight").dtype == "f32"


def test_real_qwen(qwen_path):
    src = GGUFSource(qwen_path)
    c = src.model_config()
    assert c.architectures == ("Qwen2ForCausalLM",)
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (24, 896, 14, 2)
    assert c.vocab_size == 151936 and not c.tie_word_embeddings and c.raw["attention_bias"]
    assert c.eos_token_id == 151645
    assert src.get("lm_head.weight").shape == (151936, 896)
    assert src.get("model.layers.0.self_attn.q_proj.bias").shape == (896,)
    # qwen2 is not permuted: the rows are the file's
    np.testing.assert_array_equal(src.get("model.layers.0.self_attn.q_proj.weight").data,
                                  src.raw("model.layers.0.self_attn.q_proj.weight"))
    kinds = {src.get(n).dtype for n in src.names() if n.endswith(".weight")}
    assert kinds == {"f32", "q5_0", "q8_0", "q4_k", "q6_k"}


def test_unmapped_tensors_keep_their_gguf_name_and_unsupported_types_refuse(tmp_path):
    from gguf import GGMLQuantizationType, GGUFWriter

    path = tmp_path / "odd.gguf"
    w = GGUFWriter(str(path), "qwen2")
    w.add_tensor("rope_freqs.weight", np.ones(4, np.float32))
    w.add_tensor("blk.0.attn_q.weight", np.zeros((2, 66), np.uint8), raw_dtype=GGMLQuantizationType.IQ2_XXS)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    src = GGUFSource(path)
    assert "rope_freqs.weight" in src and src.get("rope_freqs.weight").shape == (4,)
    with pytest.raises(UnsupportedFormatError, match="iq2_xxs"):
        src.get("model.layers.0.self_attn.q_proj.weight")
    with pytest.raises(CorruptFileError, match="no tensor named"):
        src.get("nope")


@pytest.mark.parametrize("family", sorted(f for f in FAMILIES if "+" not in f))
def test_name_tables_agree_with_gguf_py(family):
    # gguf-py's TensorNameMap maps HF names to GGUF names; ours must be an inverse of it
    arch = next(a for a, n in MODEL_ARCH_NAMES.items() if n == family)
    tmap = TensorNameMap(arch, 4)
    row = FAMILIES[family]
    checked = 0
    for gguf_base in {**row.block}:
        gguf_name = f"blk.3.{gguf_base}.weight"
        hf = hf_tensor_name(row, gguf_name)
        if hf is None or "{e}" in hf:
            continue
        mapped = tmap.get_name(hf[: -len(".weight")] if hf.endswith(".weight") else hf)
        if mapped is not None:
            assert mapped == gguf_name[: -len(".weight")], (hf, mapped)
            checked += 1
    assert checked or not row.block
