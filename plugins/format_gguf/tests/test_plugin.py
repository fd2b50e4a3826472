"""The plugin through the host: format and tokenizer sniffed by magic, aliases into the store."""

import shutil
from pathlib import Path

import pytest

from gllm_core.errors import UnsupportedFormatError
from gllm_core.loader import load_tokenizer, open_weights, read_config
from gllm_core.plugins import get_registry
from gllm_core.store import ModelStore
from gllm_format_gguf import ALIASES
from gllm_format_gguf.source import GGUFSource
from gllm_format_gguf.tokenizer import GGUFTokenizer

TINY = Path(__file__).parent / "fixtures" / "tiny"


def test_registered():
    registry = get_registry()
    assert registry.owners[("weight_formats", "gguf")] == "gguf"
    assert "gguf" in registry.tokenizers
    for name, repo, file, _ in ALIASES:
        assert registry.aliases[name].repo == repo and registry.aliases[name].file == file


def test_aliases_match_the_fetch_tool(fetch):
    rows = {row.alias: row for row in fetch.MODELS.values()}
    for name, repo, file, _ in ALIASES:
        assert (rows[name].repo, rows[name].alias_file) == (repo, file)


def test_a_gguf_path_loads_through_the_host(tmp_path):
    registry = get_registry()
    # any file name: the magic decides
    path = tmp_path / "model.bin"
    shutil.copy(TINY / "qwen2.gguf", path)
    weights = open_weights(str(path), registry)
    assert isinstance(weights, GGUFSource)
    config = read_config(str(path), weights)
    assert config.architectures == ("Qwen2ForCausalLM",)
    tok = load_tokenizer(str(path), config, registry, weights)
    assert isinstance(tok, GGUFTokenizer) and tok.max_length == 128
    # a folder holding one GGUF file works the same
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(TINY / "llama.gguf", folder / "x.gguf")
    assert read_config(str(folder), open_weights(str(folder), registry)).model_type == "llama"


def test_a_file_that_is_not_gguf_is_not_taken(tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"GGML" + b"\0" * 100)
    with pytest.raises(UnsupportedFormatError):
        open_weights(str(path), get_registry())


def test_alias_resolves_to_the_imported_file(tmp_path, fetch, smollm2_path):
    store = ModelStore(tmp_path / "models", aliases=get_registry().aliases)
    path = fetch.import_model("smollm2:135m", store=store)
    resolved = store.resolve("smollm2:135m", download=False)
    assert str(resolved.path) == path and resolved.file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    weights = open_weights(path, get_registry())
    assert read_config(path, weights).num_hidden_layers == 30
