"""Model families as tables: GGUF metadata → Hugging Face config fields, GGUF tensor names → HF names.

A GGUF file names its family in ``general.architecture`` and keeps the hyper-parameters under
``{arch}.*`` keys; the architectures in gllm read Hugging Face ``config.json`` field names and
weight names. Each ``Family`` row says how one family translates, so adding a family is adding
a row. ``permuted_qk`` marks families whose Q/K projection rows llama.cpp's converter permuted
(``LlamaModel.permute``: interleaved-pair RoPE layout); the reader undoes it so the weights are
back in the Hugging Face (rotate-half) layout.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import attrs
import numpy as np

# HF config field ← GGUF key (under "{arch}.") shared by the decoder families.
COMMON_CONFIG = {
    "max_position_embeddings": "context_length",
    "hidden_size": "embedding_length",
    "num_hidden_layers": "block_count",
    "intermediate_size": "feed_forward_length",
    "num_attention_heads": "attention.head_count",
    "num_key_value_heads": "attention.head_count_kv",
    "rms_norm_eps": "attention.layer_norm_rms_epsilon",
    "layer_norm_eps": "attention.layer_norm_epsilon",
    "rope_theta": "rope.freq_base",
    "head_dim": "attention.key_length",
    "sliding_window": "attention.sliding_window",
}

MOE_CONFIG = {
    "num_experts": "expert_count",  # what released Qwen-MoE config.json files call it
    "num_local_experts": "expert_count",  # what transformers 5 calls it
    "num_experts_per_tok": "expert_used_count",
    "moe_intermediate_size": "expert_feed_forward_length",
}

# GGUF tensor name (after "blk.N.") → HF name (after "model.layers.N."), shared by Llama-like families.
COMMON_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}

MOE_BLOCK = {
    "ffn_gate_inp": "mlp.gate",
    "ffn_gate_exps": "mlp.experts.{e}.gate_proj",  # [n_expert, out, in] tensors, split per expert
    "ffn_up_exps": "mlp.experts.{e}.up_proj",
    "ffn_down_exps": "mlp.experts.{e}.down_proj",
}

COMMON_GLOBAL = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}


@attrs.frozen
class Family:
    gguf_arch: str
    hf_architecture: str  # the class name a config.json would list
    model_type: str
    config: dict[str, str] = attrs.Factory(dict)  # extra HF field ← "{arch}." key
    defaults: dict[str, Any] = attrs.Factory(dict)  # HF fields the file does not carry
    block: dict[str, str] = attrs.Factory(dict)  # extra / overriding block tensor names
    permuted_qk: bool = False
    finish: Callable[[dict, Any], None] | None = None  # family-specific touches to the HF config


def _finish_deepseek2(hf: dict, md) -> None:
    arch = "deepseek2"
    rope = md.get(f"{arch}.rope.dimension_count")
    key_len = md.get(f"{arch}.attention.key_length_mla", md.get(f"{arch}.attention.key_length"))
    if isinstance(rope, int) and isinstance(key_len, int):
        hf["qk_rope_head_dim"] = rope
        hf["qk_nope_head_dim"] = key_len - rope
    value_len = md.get(f"{arch}.attention.value_length_mla", md.get(f"{arch}.attention.value_length"))
    if isinstance(value_len, int):
        hf["v_head_dim"] = value_len
    gating = md.get(f"{arch}.expert_gating_func")
    if gating is not None:
        hf["scoring_func"] = {1: "softmax", 2: "sigmoid"}.get(gating, gating)
    hf.pop("head_dim", None)


FAMILIES: dict[str, Family] = {f.gguf_arch: f for f in (
    Family("llama", "LlamaForCausalLM", "llama", permuted_qk=True,
           defaults={"hidden_act": "silu", "mlp_bias": False}),
    # Mixtral converts to general.architecture "llama" with experts; picked by ``family_for``
    Family("llama+moe", "MixtralForCausalLM", "mixtral", permuted_qk=True,
           config={"num_local_experts": "expert_count", "num_experts_per_tok": "expert_used_count"},
           block={"ffn_gate_inp": "block_sparse_moe.gate", "ffn_gate_exps": "block_sparse_moe.experts.{e}.w1",
                  "ffn_down_exps": "block_sparse_moe.experts.{e}.w2",
                  "ffn_up_exps": "block_sparse_moe.experts.{e}.w3"},
           defaults={"hidden_act": "silu"}),
    Family("smollm3", "SmolLM3ForCausalLM", "smollm3", permuted_qk=True,
           defaults={"hidden_act": "silu", "mlp_bias": False}),
    Family("qwen2", "Qwen2ForCausalLM", "qwen2", defaults={"hidden_act": "silu", "use_sliding_window": False}),
    Family("qwen3", "Qwen3ForCausalLM", "qwen3", defaults={"hidden_act": "silu", "use_sliding_window": False}),
    Family("qwen2moe", "Qwen2MoeForCausalLM", "qwen2_moe",
           config={**MOE_CONFIG, "shared_expert_intermediate_size": "expert_shared_feed_forward_length"},
           block={**MOE_BLOCK, "ffn_gate_inp_shexp": "mlp.shared_expert_gate",
                  "ffn_gate_shexp": "mlp.shared_expert.gate_proj", "ffn_up_shexp": "mlp.shared_expert.up_proj",
                  "ffn_down_shexp": "mlp.shared_expert.down_proj"},
           defaults={"hidden_act": "silu", "norm_topk_prob": False, "decoder_sparse_step": 1,
                     "mlp_only_layers": [], "use_sliding_window": False}),
    Family("qwen3moe", "Qwen3MoeForCausalLM", "qwen3_moe", config=dict(MOE_CONFIG), block=dict(MOE_BLOCK),
           defaults={"hidden_act": "silu", "norm_topk_prob": True, "decoder_sparse_step": 1,
                     "mlp_only_layers": [], "use_sliding_window": False}),
    Family("phi3", "Phi3ForCausalLM", "phi3",
           block={"attn_qkv": "self_attn.qkv_proj", "ffn_up": "mlp.gate_up_proj"},
           config={"original_max_position_embeddings": "rope.scaling.original_context_length"},
           defaults={"hidden_act": "silu"}),
    Family("glm4", "Glm4ForCausalLM", "glm4",
           block={"ffn_up": "mlp.gate_up_proj", "post_attention_norm": "post_self_attn_layernorm",
                  "post_ffw_norm": "post_mlp_layernorm", "attn_qkv": "self_attn.qkv_proj"},
           defaults={"hidden_act": "silu", "attention_bias": True}),
    Family("glm4moe", "Glm4MoeForCausalLM", "glm4_moe",
           config={**MOE_CONFIG, "n_shared_experts": "expert_shared_count",
                   "first_k_dense_replace": "leading_dense_block_count",
                   "routed_scaling_factor": "expert_weights_scale", "norm_topk_prob": "expert_weights_norm",
                   "n_group": "expert_group_count", "topk_group": "expert_group_used_count"},
           block={**MOE_BLOCK, "post_attention_norm": "post_attention_layernorm",
                  "exp_probs_b": "mlp.gate.e_score_correction_bias",
                  "ffn_gate_shexp": "mlp.shared_experts.gate_proj", "ffn_up_shexp": "mlp.shared_experts.up_proj",
                  "ffn_down_shexp": "mlp.shared_experts.down_proj"},
           defaults={"hidden_act": "silu"}),
    Family("deepseek2", "DeepseekV3ForCausalLM", "deepseek_v3",
           config={**MOE_CONFIG, "n_routed_experts": "expert_count", "n_shared_experts": "expert_shared_count",
                   "first_k_dense_replace": "leading_dense_block_count",
                   "routed_scaling_factor": "expert_weights_scale", "norm_topk_prob": "expert_weights_norm",
                   "n_group": "expert_group_count", "topk_group": "expert_group_used_count",
                   "q_lora_rank": "attention.q_lora_rank", "kv_lora_rank": "attention.kv_lora_rank"},
           block={**MOE_BLOCK, "attn_q_a": "self_attn.q_a_proj", "attn_q_a_norm": "self_attn.q_a_layernorm",
                  "attn_q_b": "self_attn.q_b_proj", "attn_q": "self_attn.q_proj",
                  "attn_kv_a_mqa": "self_attn.kv_a_proj_with_mqa", "attn_kv_a_norm": "self_attn.kv_a_layernorm",
                  "attn_kv_b": "self_attn.kv_b_proj", "exp_probs_b": "mlp.gate.e_score_correction_bias",
                  "ffn_gate_shexp": "mlp.shared_experts.gate_proj", "ffn_up_shexp": "mlp.shared_experts.up_proj",
                  "ffn_down_shexp": "mlp.shared_experts.down_proj"},
           defaults={"hidden_act": "silu"}, finish=_finish_deepseek2),
)}

# "{arch}.rope.scaling.type" → the HF rope_scaling "rope_type"
ROPE_SCALING = {"linear": "linear", "yarn": "yarn", "longrope": "longrope"}


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return _short_float(value)


def _short_float(value):
    """A float32 metadata value as the decimal it was written from (9.99999997e-07 → 1e-06), so
    the config reads as the checkpoint's; the float32 the backend computes with is the same."""
    if isinstance(value, float) and np.isfinite(value) and float(np.float32(value)) == value:
        return float(str(np.float32(value)))
    return value


def family_for(md) -> Family | None:
    """The family row for a file's metadata (None for families without a row)."""
    arch = md.get("general.architecture")
    if arch == "llama" and (md.get("llama.expert_count") or 0) > 0:
        return FAMILIES["llama+moe"]
    return FAMILIES.get(arch) if isinstance(arch, str) else None


def hf_config(family: Family, md, tensors: set[str], vocab_size: int) -> dict[str, Any]:
    """The config.json a Hugging Face checkpoint of this GGUF would carry."""
    arch = family.gguf_arch.split("+")[0]
    hf: dict[str, Any] = {"architectures": [family.hf_architecture], "model_type": family.model_type}
    hf.update(family.defaults)
    for field, key in {**COMMON_CONFIG, **family.config}.items():
        value = md.get(f"{arch}.{key}")
        if isinstance(value, (bool, int, float, str)):
            hf[field] = _short_float(value)
    hf["vocab_size"] = vocab_size
    heads = hf.get("num_attention_heads")
    if isinstance(heads, int) and heads and "head_dim" not in hf and isinstance(hf.get("hidden_size"), int):
        hf["head_dim"] = hf["hidden_size"] // heads
    rot = _number(md.get(f"{arch}.rope.dimension_count"))
    head_dim = hf.get("head_dim")
    if isinstance(rot, int) and isinstance(head_dim, int) and head_dim and rot != head_dim:
        hf["partial_rotary_factor"] = rot / head_dim
    scaling = md.get(f"{arch}.rope.scaling.type")
    factor = _number(md.get(f"{arch}.rope.scaling.factor"))
    if isinstance(scaling, str) and scaling in ROPE_SCALING and factor:
        rope_scaling = {"rope_type": ROPE_SCALING[scaling], "type": ROPE_SCALING[scaling], "factor": factor}
        orig = _number(md.get(f"{arch}.rope.scaling.original_context_length"))
        if orig:
            rope_scaling["original_max_position_embeddings"] = orig
        attn_factor = _number(md.get(f"{arch}.rope.scaling.attn_factor"))
        if attn_factor:
            rope_scaling["attention_factor"] = attn_factor
        hf["rope_scaling"] = rope_scaling
    hf["tie_word_embeddings"] = "output.weight" not in tensors
    hf["attention_bias"] = "blk.0.attn_q.bias" in tensors or hf.get("attention_bias", False)
    for field, key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                       ("pad_token_id", "padding_token_id")):
        value = md.get(f"tokenizer.ggml.{key}")
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < max(vocab_size, 1):
            hf[field] = value
    if family.finish is not None:
        family.finish(hf, md)
    return hf


_BLOCK_NAME = re.compile(r"^blk\.(\d+)\.(.+)\.(weight|bias)$")
_GLOBAL_NAME = re.compile(r"^([^.]+)\.(weight|bias)$")


def hf_tensor_name(family: Family | None, name: str) -> str | None:
    """The HF name of a GGUF tensor (``{e}`` left in for per-expert tensors), or None if unmapped."""
    m = _BLOCK_NAME.match(name)
    if m:
        bid, base, kind = m.groups()
        hf = (family.block.get(base) if family else None) or COMMON_BLOCK.get(base)
        if hf is None:
            return None
        if base == "exp_probs_b":  # stored as ".bias"; HF names the parameter itself
            return f"model.layers.{bid}.{hf}"
        return f"model.layers.{bid}.{hf}.{kind}"
    m = _GLOBAL_NAME.match(name)
    if m and m.group(1) in COMMON_GLOBAL:
        return f"{COMMON_GLOBAL[m.group(1)]}.{m.group(2)}"
    return None
