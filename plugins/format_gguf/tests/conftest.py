"""Shared setup: a private model store, no network, and the real GGUF files from their PyPI packages."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tools import fetch_models  # the repository root is on sys.path (pyproject.toml)

FIXTURES = Path(__file__).parent / "fixtures"

if "GLLM_HOME" not in os.environ or not os.environ["GLLM_HOME"].startswith(tempfile.gettempdir()):
    os.environ["GLLM_HOME"] = tempfile.mkdtemp(prefix="gllm-test-home-")
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF, sha256-checked."""
    return fetch_models.model_path("smollm2:135m")


@pytest.fixture(scope="session")
def qwen_path() -> str:
    """The real Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF, joined from its 6 packages and sha256-checked."""
    return fetch_models.model_path("qwen2.5-coder:0.5b")


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    """llama.cpp's tokenizer test vectors, from the llama-cpp-python source archive."""
    return Path(fetch_models.archive_path("llama-cpp-vocab"))


@pytest.fixture(scope="session")
def fetch():
    """The fetch tool module."""
    return fetch_models
