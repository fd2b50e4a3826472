"""RoPE inverse frequencies and attention factors against transformers (tests/fixtures/rope_reference.json,
made by tools/make_decoder_fixtures.py), and the config layouts and errors of gllm_core.rope."""

import json
from pathlib import Path

import numpy as np
import pytest

from gllm_core.config import ModelConfig
from gllm_core.errors import CorruptFileError, UnsupportedArchitectureError
from gllm_core.rope import Rotary, compute_rope, rope_parameters

CASES = json.loads((Path(__file__).parent / "fixtures" / "rope_reference.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["config"]["rope_parameters"]["rope_type"])
def test_inv_freq_and_attention_factor_match_transformers(case):
    config = ModelConfig.from_dict(case["config"], path="/m")
    rotary = Rotary(config)
    for result in case["results"]:
        inv_freq, factor = rotary.at(result["seq_len"] or 0)
        expected = np.asarray(result["inv_freq"], dtype=np.float32)
        assert inv_freq.dtype == np.float32 and inv_freq.shape == expected.shape
        np.testing.assert_array_max_ulp(inv_freq, expected, maxulp=1)
        assert factor == pytest.approx(result["attention_factor"], rel=1e-12)


def test_released_layout_reads_as_transformers_layout():
    for case in CASES:
        raw = dict(case["config"])
        params = dict(raw.pop("rope_parameters"))
        raw["rope_theta"] = params.pop("rope_theta")
        kind = params.pop("rope_type")
        raw["rope_scaling"] = None if kind == "default" else {"type": kind, **params}
        new = rope_parameters(ModelConfig.from_dict(case["config"], path="/m"))
        old = rope_parameters(ModelConfig.from_dict(raw, path="/m"))
        assert {k: v for k, v in old.items() if k != "type"} == {k: v for k, v in new.items() if k != "type"}


def test_length_dependent_types_group_sequences_by_frequencies():
    dynamic = Rotary(ModelConfig.from_dict({"head_dim": 16, "max_position_embeddings": 32,
                                            "rope_scaling": {"type": "dynamic", "factor": 2.0}}))
    assert dynamic.length_dependent and dynamic.key(5) == dynamic.key(32) != dynamic.key(33)
    np.testing.assert_array_equal(dynamic.at(5)[0], dynamic.at(32)[0])
    assert not np.array_equal(dynamic.at(32)[0], dynamic.at(40)[0])
    plain = Rotary(ModelConfig.from_dict({"head_dim": 16, "rope_theta": 1e6}))
    assert not plain.length_dependent and plain.key(5) is None and plain.rotary_dim == 16


@pytest.mark.parametrize("scaling, error, message", [
    ({"rope_type": "mrope"}, UnsupportedArchitectureError, "rope type 'mrope' is not supported"),
    ({"rope_type": "linear"}, CorruptFileError, "needs 'factor'"),
    ({"rope_type": "linear", "factor": "2"}, CorruptFileError, "'factor' must be a number"),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0}, CorruptFileError,
     "high_freq_factor must exceed"),
    ({"rope_type": "longrope", "long_factor": [1.0], "short_factor": [1.0]}, CorruptFileError, "list of 8 numbers"),
    ("linear", CorruptFileError, "must be an object"),
    ({"full_attention": {"rope_type": "default"}}, UnsupportedArchitectureError, "per-layer-type"),
])
def test_bad_rope_configs_name_the_field(scaling, error, message):
    raw = {"head_dim": 16, "max_position_embeddings": 64, "rope_scaling": scaling}
    with pytest.raises(error, match=message):
        Rotary(ModelConfig.from_dict(raw, path="/m"))


def test_bad_theta_and_rotary_dims():
    with pytest.raises(CorruptFileError, match="rope_theta must be positive"):
        compute_rope({"rope_type": "default", "rope_theta": 0}, 16, 64)
    with pytest.raises(CorruptFileError, match="rotary dimension 5"):
        compute_rope({"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}, 10, 64)
