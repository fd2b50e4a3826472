"""Tiny random-weight Qwen2 / Qwen3 / Qwen3-MoE fixtures (tools/make_decoder_fixtures.py) against transformers."""

from pathlib import Path

import numpy as np
import pytest

from gllm_core.causal_lm_checks import (check_batch_reference, check_greedy_reference, check_kv_cache,
                                        check_logits_reference, check_rounded_reference, prompt_logits,
                                        reference_prompt)
from gllm_core.config import ModelConfig
from gllm_core.errors import CorruptFileError
from gllm_core.nn import MoE
from gllm_core.plugins import get_registry
from gllm_core.selection import create_backend
from gllm_core.testing import backend_fixture, load_folder, load_reference
from gllm_core.weights import DictWeightSource

import gllm_arch_qwen

FIXTURES = Path(__file__).parent / "fixtures"
FLOAT32 = ["tiny-qwen2", "tiny-qwen2-window", "tiny-qwen3", "tiny-qwen3-yarn", "tiny-qwen3-moe",
           "tiny-qwen3-moe-nonorm"]
ROUNDED = {"tiny-qwen2-f16": "tiny-qwen2", "tiny-qwen2-bf16": "tiny-qwen2", "tiny-qwen3-moe-bf16": "tiny-qwen3-moe"}
N_PROMPTS = 4
backend = backend_fixture()


def _load(name, backend):
    return load_folder(FIXTURES / name, backend)


def _ref(name):
    return load_reference(FIXTURES / name)


def test_plugin_registers_architectures_and_aliases():
    registry = get_registry()
    for hf, name in (("Qwen2ForCausalLM", "qwen2"), ("Qwen3ForCausalLM", "qwen3"), ("Qwen3MoeForCausalLM", "qwen3-moe")):
        assert registry.architecture_for(hf_architectures=(hf,)).name == name
        assert registry.owners[("architectures", name)] == "qwen"
    assert registry.aliases["qwen2.5:0.5b"].repo == "Qwen/Qwen2.5-0.5B-Instruct"
    assert registry.aliases["qwen2.5:72b"].repo == "Qwen/Qwen2.5-72B-Instruct"
    assert registry.aliases["qwen3:0.6b"].repo == "Qwen/Qwen3-0.6B"
    assert registry.aliases["qwen3:32b"].repo == "Qwen/Qwen3-32B"
    assert registry.aliases["qwen3:30b-a3b"].repo == "Qwen/Qwen3-30B-A3B"


@pytest.mark.parametrize("name", FLOAT32 + list(ROUNDED))
def test_prompt_logits_match_transformers(name, backend):
    check_logits_reference(_load(name, backend).model, _ref(name), N_PROMPTS, atol=1e-4, label=name)


@pytest.mark.parametrize("name", list(ROUNDED))
def test_f16_bf16_weights_agree_on_argmax(name, backend):
    model = _load(name, backend)
    assert model.weights.get("model.layers.0.self_attn.q_proj.weight").dtype == name.rsplit("-", 1)[1]
    check_rounded_reference(model.model, _ref(name), _ref(ROUNDED[name]), N_PROMPTS, margin=0.5)


@pytest.mark.parametrize("name", FLOAT32 + list(ROUNDED))
def test_greedy_continuation_matches_transformers(name, backend):
    check_greedy_reference(_load(name, backend).model, _ref(name), N_PROMPTS, steps=16, label=name)


@pytest.mark.parametrize("name", FLOAT32)
def test_cached_decode_equals_recompute(name, backend):
    model = _load(name, backend)
    model.model.set_kv_block_size(8)
    ref = _ref(name)
    check_kv_cache(model.model, [reference_prompt(ref, i) for i in (0, 3)], steps=8, chunks=[5, 1, 7])
    assert model.model.kv_pool.blocks_in_use == 0


@pytest.mark.parametrize("name", ["tiny-qwen2-window", "tiny-qwen3", "tiny-qwen3-moe"])
@pytest.mark.parametrize("block_size", [3, 256])
def test_batch_of_prompts_generates_what_each_generates_alone(name, block_size, backend):
    model = _load(name, backend)
    model.model.set_kv_block_size(block_size)
    check_batch_reference(model.model, _ref(name), order=(1, 3, 0, 2), steps=16)


def test_moe_layers_follow_sparse_step_and_mlp_only_layers():
    dense = _load("tiny-qwen3-moe", create_backend(get_registry(), "numpy")).model
    assert [isinstance(layer.mlp, MoE) for layer in dense.layers] == [True, False, True]  # mlp_only_layers [1]
    step2 = _load("tiny-qwen3-moe-nonorm", create_backend(get_registry(), "numpy")).model
    assert [isinstance(layer.mlp, MoE) for layer in step2.layers] == [False, True, False]  # decoder_sparse_step 2
    moe = dense.layers[0].mlp
    assert (moe.top_k, moe.norm_topk_prob, len(moe.experts)) == (2, True, 8)
    assert step2.layers[1].mlp.norm_topk_prob is False

    def config(**changes):
        raw = {"num_hidden_layers": 6, "num_experts": 4, **changes}
        return ModelConfig.from_dict(raw, path="/m")

    assert gllm_arch_qwen.moe_layers(config(decoder_sparse_step=3, mlp_only_layers=[5])) == {2}
    assert gllm_arch_qwen.moe_layers(config(num_experts=0)) == frozenset()
    for bad, message in (({"decoder_sparse_step": 0}, "decoder_sparse_step"), ({"mlp_only_layers": "1"}, "mlp_only_layers"),
                         ({"num_experts": -1}, "num_experts")):
        with pytest.raises(CorruptFileError, match=message):
            gllm_arch_qwen.moe_layers(config(**bad))


def test_tokenizer_and_chat_files(backend):
    model = _load("tiny-qwen2", backend)
    ref = _ref("tiny-qwen2")
    tok = model.tokenizer
    assert tok.vocab_size == model.model.vocab_size >= 300
    assert tok.encode("Hi") == reference_prompt(ref, 0)  # no bos for Qwen
    assert tok.bos_token is None and tok.eos_token == "<|im_end|>"
    assert tok.decode(ref["chat_ids"].tolist(), skip_special_tokens=False) == str(ref["chat_text"])


def _weights(name):
    from gllm_core.formats.safetensors_format import open_safetensors

    source = open_safetensors(str(FIXTURES / name))
    return {n: source.get(n) for n in source.names()}


def test_bad_checkpoints_raise_clear_errors():
    backend = create_backend(get_registry(), "numpy")
    config = ModelConfig.from_file(str(FIXTURES / "tiny-qwen3-moe" / "config.json"))
    weights = _weights("tiny-qwen3-moe")
    for name, message in (("model.layers.2.mlp.experts.7.down_proj.weight", "experts.7.down_proj.weight"),
                          ("model.layers.0.self_attn.k_norm.weight", "k_norm.weight"),
                          ("model.layers.0.mlp.gate.weight", "mlp.gate.weight")):
        missing = {k: v for k, v in weights.items() if k != name}
        with pytest.raises(CorruptFileError, match=message):
            gllm_arch_qwen.build_qwen3_moe(config, DictWeightSource(missing), backend)
    raw = dict(config.raw, num_experts_per_tok=9)
    with pytest.raises(CorruptFileError, match="route each token to 9 of 8 experts"):
        gllm_arch_qwen.build_qwen3_moe(ModelConfig.from_dict(raw, path=config.path), DictWeightSource(weights), backend)
    raw = dict(config.raw, moe_intermediate_size=17)
    with pytest.raises(CorruptFileError, match="experts.0.gate_proj.weight: MLP gate projection should have shape"):
        gllm_arch_qwen.build_qwen3_moe(ModelConfig.from_dict(raw, path=config.path), DictWeightSource(weights), backend)
    q2 = _weights("tiny-qwen2")
    del q2["model.layers.0.self_attn.v_proj.bias"]
    with pytest.raises(CorruptFileError, match="v_proj.bias"):
        gllm_arch_qwen.build_qwen2(ModelConfig.from_file(str(FIXTURES / "tiny-qwen2" / "config.json")),
                                   DictWeightSource(q2), backend)


def test_sliding_window_from_the_released_config_layout():
    """Released Qwen2 configs have no layer_types: use_sliding_window + max_window_layers decide."""
    from gllm_core.decoder import layer_windows

    backend = create_backend(get_registry(), "numpy")
    config = ModelConfig.from_file(str(FIXTURES / "tiny-qwen2-window" / "config.json"))
    raw = {k: v for k, v in config.raw.items() if k != "layer_types"}
    released = ModelConfig.from_dict(raw, path=config.path)
    assert layer_windows(released) == layer_windows(config) == [None, 8]
    assert layer_windows(ModelConfig.from_dict(dict(raw, use_sliding_window=False), path=config.path)) == [None, None]
    lm = gllm_arch_qwen.build_qwen2(released, DictWeightSource(_weights("tiny-qwen2-window")), backend)
    ref = _ref("tiny-qwen2-window")
    np.testing.assert_allclose(prompt_logits(lm, reference_prompt(ref, 3)), ref["logits_3"], atol=1e-4, rtol=0)
