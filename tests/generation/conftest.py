"""Fixtures of the generation tests; the toy model and tokenizer live in toy_lm.py, importable
from the test modules as ``gllm_toy_lm`` (pytest runs with --import-mode=importlib)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

if "gllm_toy_lm" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("gllm_toy_lm", Path(__file__).with_name("toy_lm.py"))
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["gllm_toy_lm"] = _module
    _spec.loader.exec_module(_module)

from gllm_toy_lm import toy_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return toy_tokenizer()
