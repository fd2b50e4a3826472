"""No network and a private model store; the real all-MiniLM-L6-v2 from its PyPI package."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("GLLM_HOME", tempfile.mkdtemp(prefix="gllm-cpu-test-home-"))
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def minilm() -> str:
    """The sha256-checked model folder (tools/fetch_models.py), used by path."""
    from tools import fetch_models

    return str(fetch_models.model_path("all-minilm:l6"))
