"""Shared test setup: a private model store, no network, and the real MiniLM from its package."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# never touch the user's store or the network from a test
_HOME = tempfile.mkdtemp(prefix="gllm-test-home-")
os.environ["GLLM_HOME"] = _HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("GLLM_BACKEND", None)
os.environ.pop("GLLM_LOAD_PLUGINS", None)


def _fetch_tool():
    spec = importlib.util.spec_from_file_location("gllm_fetch_models", ROOT / "tools" / "fetch_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gllm_fetch_models", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """The real all-MiniLM-L6-v2 folder from its PyPI package, sha256-checked."""
    return str(_fetch_tool().model_path("all-minilm:l6"))


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
