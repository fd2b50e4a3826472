"""Tiny random-weight Llama fixtures (made by tools/make_decoder_fixtures.py) against transformers."""

from pathlib import Path

import numpy as np
import pytest

from gllm_core.causal_lm_checks import (check_batch_reference, check_greedy_reference, check_kv_cache,
                                        check_logits_reference, check_rounded_reference, reference_prompt)
from gllm_core.config import ModelConfig
from gllm_core.decoder import DecoderLM
from gllm_core.errors import CorruptFileError, UnsupportedArchitectureError
from gllm_core.plugins import get_registry
from gllm_core.selection import create_backend
from gllm_core.testing import backend_fixture, load_folder, load_reference
from gllm_core.weights import DictWeightSource

import gllm_arch_llama

FIXTURES = Path(__file__).parent / "fixtures"
FLOAT32 = ["tiny-llama", "tiny-llama-untied", "tiny-llama-llama3", "tiny-llama-yarn", "tiny-llama-linear",
           "tiny-llama-dynamic"]
ROUNDED = ["tiny-llama-f16", "tiny-llama-bf16"]
N_PROMPTS = 4
backend = backend_fixture()


def _load(name, backend):
    return load_folder(FIXTURES / name, backend)


def _ref(name):
    return load_reference(FIXTURES / name)


def test_plugin_registers_architecture_and_aliases():
    registry = get_registry()
    assert registry.architecture_for(hf_architectures=("LlamaForCausalLM",)).name == "llama"
    assert registry.aliases["llama3.2:1b"].repo == "meta-llama/Llama-3.2-1B-Instruct"
    assert registry.aliases["smollm2:1.7b"].repo == "HuggingFaceTB/SmolLM2-1.7B-Instruct"
    assert registry.owners[("architectures", "llama")] == "llama"


@pytest.mark.parametrize("name", FLOAT32 + ROUNDED)
def test_prompt_logits_match_transformers(name, backend):
    model = _load(name, backend)
    assert isinstance(model.model, DecoderLM) and "generate" in model.tasks
    check_logits_reference(model.model, _ref(name), N_PROMPTS, atol=1e-4, label=name)


@pytest.mark.parametrize("name", ROUNDED)
def test_f16_bf16_weights_agree_on_argmax(name, backend):
    model = _load(name, backend)
    assert model.weights.get("model.layers.0.self_attn.q_proj.weight").dtype == name.rsplit("-", 1)[1]
    check_rounded_reference(model.model, _ref(name), _ref("tiny-llama"), N_PROMPTS, margin=0.5)


@pytest.mark.parametrize("name", FLOAT32 + ROUNDED)
def test_greedy_continuation_matches_transformers(name, backend):
    check_greedy_reference(_load(name, backend).model, _ref(name), N_PROMPTS, steps=16, label=name)


@pytest.mark.parametrize("name", FLOAT32)
def test_cached_decode_equals_recompute(name, backend):
    model = _load(name, backend)
    model.model.set_kv_block_size(8)  # cross block boundaries and grow the pool
    ref = _ref(name)
    # tiny-llama-dynamic stops at its 32 positions: past them dynamic NTK changes the frequencies
    # with the length, so (in transformers too) cached keys differ from recomputed ones
    prompts = [2] if name == "tiny-llama-dynamic" else [0, 3]
    check_kv_cache(model.model, [reference_prompt(ref, i) for i in prompts], steps=8, chunks=[5, 1, 7])
    assert model.model.kv_pool.blocks_in_use == 0


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-llama3", "tiny-llama-dynamic"])
@pytest.mark.parametrize("block_size", [1, 256])
def test_batch_of_prompts_generates_what_each_generates_alone(name, block_size, backend):
    model = _load(name, backend)
    model.model.set_kv_block_size(block_size)
    check_batch_reference(model.model, _ref(name), order=(3, 0, 2, 1), steps=16)  # lengths 60, 3, 22, 33


def test_tokenizer_and_chat_files(backend):
    model = _load("tiny-llama", backend)
    ref = _ref("tiny-llama")
    tok = model.tokenizer
    assert tok.vocab_size == model.model.vocab_size >= 300
    assert tok.encode("Hi") == reference_prompt(ref, 0)  # <|begin_of_text|> prepended
    assert tok.bos_token == "<|begin_of_text|>" and tok.eos_token == "<|im_end|>"
    assert tok.chat_template.startswith("{{ bos_token }}")
    assert tok.decode(ref["chat_ids"].tolist(), skip_special_tokens=False) == str(ref["chat_text"])


def _weights(name):
    from gllm_core.formats.safetensors_format import open_safetensors

    source = open_safetensors(str(FIXTURES / name))
    return {n: source.get(n) for n in source.names()}


def _config(name, **changes):
    raw = ModelConfig.from_file(str(FIXTURES / name / "config.json")).raw
    raw.update(changes)
    return ModelConfig.from_dict(raw, path=str(FIXTURES / name))


def test_bad_checkpoints_raise_clear_errors():
    backend = create_backend(get_registry(), "numpy")
    weights = _weights("tiny-llama-untied")
    config = _config("tiny-llama-untied")
    missing = dict(weights)
    del missing["model.layers.1.self_attn.k_proj.bias"]
    with pytest.raises(CorruptFileError, match="model.layers.1.self_attn.k_proj.bias"):
        gllm_arch_llama.build(config, DictWeightSource(missing), backend)
    short = dict(weights)
    q = weights["model.layers.0.self_attn.q_proj.weight"]
    short["model.layers.0.self_attn.q_proj.weight"] = type(q)(q.name, q.data[:-1], q.dtype, (q.rows - 1, q.cols))
    with pytest.raises(CorruptFileError, match="q_proj.weight: query projection should have shape"):
        gllm_arch_llama.build(config, DictWeightSource(short), backend)
    no_head = dict(weights)
    del no_head["lm_head.weight"]
    with pytest.raises(CorruptFileError, match="lm_head.weight"):
        gllm_arch_llama.build(config, DictWeightSource(no_head), backend)
    with pytest.raises(UnsupportedArchitectureError, match="rope type 'mrope'"):
        gllm_arch_llama.build(_config("tiny-llama-untied", rope_parameters={"rope_type": "mrope", "rope_theta": 1e4}),
                              DictWeightSource(weights), backend)
    with pytest.raises(CorruptFileError, match="needs 'factor'"):
        gllm_arch_llama.build(_config("tiny-llama-untied", rope_parameters={"rope_type": "linear", "rope_theta": 1e4}),
                              DictWeightSource(weights), backend)
    with pytest.raises(UnsupportedArchitectureError, match="hidden_act 'gelu'"):
        gllm_arch_llama.build(_config("tiny-llama-untied", hidden_act="gelu"), DictWeightSource(weights), backend)
    with pytest.raises(CorruptFileError, match="4 query heads cannot share 3 KV heads"):
        gllm_arch_llama.build(_config("tiny-llama-untied", num_key_value_heads=3), DictWeightSource(weights), backend)


def test_forward_refuses_bad_input():
    from gllm_core.errors import BadRequestError

    lm = _load("tiny-llama", create_backend(get_registry(), "numpy")).model
    other = _load("tiny-llama", create_backend(get_registry(), "numpy")).model
    cache = lm.new_cache()
    cases = [
        (([[1, 2]], []), "one cache per sequence"),
        (([[]], [cache]), "non-empty list"),
        (([[1, lm.vocab_size]], [cache]), f"id {lm.vocab_size}, outside the vocabulary"),
        (([[-1]], [cache]), "id -1"),
        (([[1.5]], [cache]), "token ids"),
        (([["a"]], [cache]), "token ids"),
        (([[1, [2]]], [cache]), "token ids"),
        (([[1, 10**30]], [cache]), "token ids"),
        (([[True]], [cache]), "token ids"),
        (([np.array([[1, 2]])], [cache]), "token ids"),
        (([[1], [2]], [cache, cache]), "same cache appears twice"),
        (([[1]], [other.new_cache()]), "not made by this model"),
    ]
    for (tokens, caches), message in cases:
        with pytest.raises(BadRequestError, match=message):
            lm.forward(tokens, caches)
    assert cache.length == 0  # nothing half-done
    lm.forward([np.array([1, 2], dtype=np.uint8), (3,)], [cache, lm.new_cache()])  # any integer sequence
    assert cache.length == 2
    cache.free()
    with pytest.raises(BadRequestError, match="freed"):
        lm.forward([[1]], [cache])
    with pytest.raises(BadRequestError, match="block size"):
        held = lm.new_cache()
        lm.forward([[1]], [held])
        lm.set_kv_block_size(4)
