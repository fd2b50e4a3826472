"""Registration, thread control and the real MiniLM through the SDK on the cpu backend."""

import threading

import numba
import numpy as np
import pytest

import gllm
from gllm_core.errors import BackendUnavailableError
from gllm_core.plugins import get_registry
from gllm_core.selection import backend_statuses, create_backend

from gllm_backend_cpu import threads
from gllm_backend_cpu.backend import NumbaBackend


def test_registered_as_cpu_with_priority_200():
    status = {s.name: s for s in backend_statuses(get_registry())}["cpu"]
    assert status.available and status.priority == 200 and "numba" in status.detail
    assert isinstance(create_backend(get_registry(), "cpu"), NumbaBackend)


def test_threads_come_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv("GLLM_NUM_THREADS", "1")
    assert threads.requested_threads() == 1
    assert threads.requested_threads(3) == 3
    monkeypatch.delenv("GLLM_NUM_THREADS")
    assert threads.requested_threads() == threads.available_cores()
    for bad in ("two", "0", "-1"):
        monkeypatch.setenv("GLLM_NUM_THREADS", bad)
        with pytest.raises(BackendUnavailableError, match="GLLM_NUM_THREADS|positive"):
            threads.requested_threads()


def test_numba_and_blas_share_one_thread_count(monkeypatch):
    monkeypatch.setenv("GLLM_NUM_THREADS", "1")
    backend = create_backend(get_registry(), "cpu")
    assert backend.threads == 1
    assert backend.blas, "numpy's BLAS was not found, so its threads could not be capped"
    assert threads.blas_threads() == 1
    x = np.ones((4, 8), np.float32)
    seen = []

    def other_thread():  # numba's count is per calling thread: a new caller gets it re-applied
        backend.add(x, x)
        seen.append(numba.get_num_threads())

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert seen == [1]
    wide = NumbaBackend(threads=10_000)  # capped at the cores numba has
    assert wide.threads == numba.config.NUMBA_NUM_THREADS


def test_minilm_on_cpu_matches_sentence_transformers(minilm):
    """The real model, every text of the reference set, through the SDK on this backend."""
    import json
    from pathlib import Path

    ref_dir = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "minilm"
    texts = json.loads((ref_dir / "texts.json").read_text())
    ref = np.load(ref_dir / "reference.npz")["embeddings"]
    client = gllm.Client(backend="cpu")
    out = client.embeddings.create(model=minilm, input=texts)
    v = np.array([d.embedding for d in out.data], dtype=np.float32)
    cos = (v * ref).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.99999, (cos.min(), texts[int(cos.argmin())][:60])
