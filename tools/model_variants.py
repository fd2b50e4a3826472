"""Variants of a fixture model folder, told as ``{file: content}``: a dict is merged into the
file's JSON object (the file is created when missing), anything else replaces the file's JSON.

tools/make_rerank_fixtures.py records references for each variant; the tests rebuild the
variant's folder the same way (``from tools.model_variants import apply_variant``). No torch here.
"""

from __future__ import annotations

import json
from pathlib import Path


def apply_variant(folder: Path, variant: dict) -> None:
    for file, extra in variant.items():
        path = folder / file
        if isinstance(extra, dict):
            data = json.loads(path.read_text()) if path.exists() else {}
            data.update(extra)
        else:
            data = extra
        path.write_text(json.dumps(data, indent=2) + "\n")
