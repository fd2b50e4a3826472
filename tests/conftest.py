"""Shared test setup: a private model store, no network, and the real MiniLM from its package."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tools import fetch_models  # the repository root is on sys.path (pyproject.toml)

# never touch the user's store or the network from a test
_HOME = tempfile.mkdtemp(prefix="gllm-test-home-")
os.environ["GLLM_HOME"] = _HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("GLLM_BACKEND", None)
os.environ.pop("GLLM_LOAD_PLUGINS", None)


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """The real all-MiniLM-L6-v2 folder from its PyPI package, sha256-checked."""
    return str(fetch_models.model_path("all-minilm:l6"))


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    """llama.cpp's vocab-only GGUFs and models/templates, from the llama-cpp-python source archive
    (sha256-checked)."""
    return Path(fetch_models.archive_path("llama-cpp-vocab"))


@pytest.fixture(scope="session")
def minilm(minilm_dir) -> str:
    """The model imported into the session's store as a user would; returns its alias."""
    from gllm_core.plugins import get_registry
    from gllm_core.store import ModelStore

    store = ModelStore(aliases=get_registry().aliases)
    if store.get("all-minilm:l6") is None:
        store.import_path(minilm_dir, "all-minilm:l6")
    return "all-minilm:l6"


@pytest.fixture(scope="session")
def client(minilm):
    import gllm

    return gllm.Client(backend="numpy")
