"""No network and a private model store; the real all-MiniLM-L6-v2 from its PyPI package."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
os.environ.setdefault("GLLM_HOME", tempfile.mkdtemp(prefix="gllm-cpu-test-home-"))
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def minilm() -> str:
    """The sha256-checked model folder (tools/fetch_models.py), used by path."""
    spec = importlib.util.spec_from_file_location("gllm_fetch_models", ROOT / "tools" / "fetch_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gllm_fetch_models", module)
    spec.loader.exec_module(module)
    return str(module.model_path("all-minilm:l6"))
