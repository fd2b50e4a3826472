"""The numba kernels of the cpu backend, compiled once per machine (``cache=True``).

numba keys a cached kernel on its own source file only, not on the files whose functions it
inlines; so when any source of the package changes, every file is touched, which invalidates
every cached kernel (in ``__pycache__`` or ``NUMBA_CACHE_DIR`` alike) instead of leaving a stale
one that inlined an old helper.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def _invalidate_stale_cache() -> None:
    here = Path(__file__).resolve().parent
    package = here.parent
    digest = hashlib.sha256()
    sources = sorted(package.rglob("*.py"))
    for path in sources:
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    stamp = here / "__pycache__" / "gllm-kernel-sources.sha256"
    try:
        if stamp.read_text() == digest.hexdigest():
            return
    except OSError:
        pass
    try:
        for path in sources:
            os.utime(path)
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(digest.hexdigest())
    except OSError:  # a read-only install never changes its sources
        pass


_invalidate_stale_cache()
