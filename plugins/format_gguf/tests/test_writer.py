"""``gllm quantize``: a model written as GGUF is llama.cpp's layout, and loads and runs in gllm.

The tiny fixtures were converted by llama.cpp's own convert_hf_to_gguf.py; written back from the
same Hugging Face weights with ``--type f32``, every tensor must come out byte for byte the same.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from gllm.cli import cli
from gllm_core.loader import load_model
from gllm_core.plugins import get_host, get_registry
from gllm_core.selection import create_backend
from gllm_format_gguf.reader import GGUFFile
from tools.make_gguf_fixtures import checkpoint_weights

TINY = Path(__file__).parent / "fixtures" / "tiny"
FAMILIES = ["llama", "qwen2", "qwen3", "qwen3moe"]


def _run(*args):
    get_host().add_commands(cli)
    result = CliRunner().invoke(cli, list(args))
    return result


def hf_folder(family: str, dst: Path) -> Path:
    """The Hugging Face checkpoint the tiny GGUF was converted from (weights, config, tokenizer)."""
    dst.mkdir(parents=True, exist_ok=True)
    weights = checkpoint_weights(family, TINY)
    if family == "llama":
        weights.pop("lm_head.weight")  # tied
    save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(dst / "model.safetensors"))
    shutil.copy(TINY / f"{family}.config.json", dst / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY / name, dst / name)
    return dst


@pytest.mark.parametrize("family", FAMILIES)
def test_f32_output_is_what_llama_cpp_converts(tmp_path, family):
    out = tmp_path / "out.gguf"
    result = _run("quantize", str(hf_folder(family, tmp_path / "hf")), str(out), "--type", "f32")
    assert result.exit_code == 0, result.output
    ours, theirs = GGUFFile(out), GGUFFile(TINY / f"{family}.gguf")
    assert set(ours.tensors) == set(theirs.tensors)
    for name in theirs.tensors:
        assert ours.tensors[name].shape == theirs.tensors[name].shape
        assert np.array_equal(ours.array(name), theirs.array(name)), name
    for key, value in theirs.metadata.items():
        if key.startswith(("general.", "tokenizer.ggml.pre")):
            continue  # names, and the pre-tokenizer the converter was told
        mine = ours.metadata[key]
        assert (mine.tolist() if hasattr(mine, "tolist") else mine) == \
            (value.tolist() if hasattr(value, "tolist") else value), key


@pytest.mark.parametrize("family", ["llama", "qwen3moe"])
@pytest.mark.parametrize("qtype, tolerance", [("q8_0", 0.02), ("q4_k", 0.15)])
def test_quantized_output_runs_in_gllm(tmp_path, family, qtype, tolerance):
    out = tmp_path / "out.gguf"
    result = _run("quantize", str(hf_folder(family, tmp_path / "hf")), str(out), "--type", qtype)
    assert result.exit_code == 0, result.output
    kinds = {t.type.name for t in GGUFFile(out).tensors.values()}
    assert kinds <= {"f32", qtype, "q5_0"} and len(kinds) > 1  # q4_k rows of 32/64 fall back to q5_0
    registry = get_registry()
    model = load_model("tiny", str(out), create_backend(registry, "numpy"), registry)
    ref = np.load(TINY / f"{family}.npz")
    for i in range(3):
        expected = ref[f"logits_{i}"]
        got = model.model.forward([ref[f"ids_{i}"].tolist()], [model.model.new_cache()], all_logits=True)[0]
        assert np.max(np.abs(got - expected)) < tolerance * np.max(np.abs(expected))


def test_requantized_real_model_keeps_its_answers(tmp_path, smollm2_path):
    out = tmp_path / "smollm2-q8_0.gguf"
    result = _run("quantize", smollm2_path, str(out), "--type", "q8_0")
    assert result.exit_code == 0, result.output
    registry = get_registry()
    cpu = create_backend(registry, "cpu")
    original = load_model("a", smollm2_path, cpu, registry)
    requantized = load_model("b", str(out), cpu, registry)
    assert requantized.tokenizer.encode("Hello, world") == original.tokenizer.encode("Hello, world")
    ids = original.tokenizer.encode("1, 2, 3, 4, 5, 6,")
    streams = []
    for m in (original, requantized):
        cache, out_ids = m.model.new_cache(), []
        logits = m.model.forward([ids], [cache])
        for _ in range(8):
            out_ids.append(int(np.argmax(logits[0])))
            logits = m.model.forward([[out_ids[-1]]], [cache])
        streams.append(out_ids)
    assert streams[0] == streams[1]
    assert original.tokenizer.decode(streams[0]).startswith(" 7, 8, 9")


def test_bad_type_and_failed_write_leave_nothing(tmp_path):
    out = tmp_path / "x.gguf"
    result = _run("quantize", str(TINY / "llama.gguf"), str(out), "--type", "q3_k")
    assert result.exit_code != 0 and "q3_k" in result.output and not out.exists()
    folder = hf_folder("llama", tmp_path / "hf")
    (folder / "tokenizer.json").write_text('{"model": {"type": "Unigram"}}')
    result = _run("quantize", str(folder), str(out), "--type", "q8_0")
    assert result.exit_code != 0 and "tokenizer" in result.output
    assert list(tmp_path.glob("x.gguf*")) == []
