"""What plugin authors test with.

Backend plugins: a conformance suite that checks any backend against the numpy reference on
random inputs. A backend plugin runs it in its tests::

    import pytest
    from gllm_core.testing import conformance_cases

    @pytest.mark.parametrize("case", conformance_cases(), ids=str)
    def test_conformance(case):
        case.check(MyBackend())

Shapes include odd sizes (not multiples of any tile or vector width) on purpose.

Architecture plugins: a ``backend`` fixture that runs a test once on every backend available
here, and loaders for the tiny reference models a plugin's ``tools/make_*_fixtures.py`` writes
(one folder each, with the transformers outputs in ``reference.npz``)::

    from gllm_core.testing import backend_fixture, load_folder, load_reference

    FIXTURES = Path(__file__).parent / "fixtures"
    backend = backend_fixture()

    def test_hidden_states(backend):
        model = load_folder(FIXTURES / "tiny-bert", backend)
        ref = load_reference(FIXTURES / "tiny-bert")
        ...

Decoder plugins compare against their references with ``gllm_core.causal_lm_checks``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import attrs
import numpy as np

from .backends.numpy_backend import NumpyBackend
from .weights import WeightMatrix, WeightVector, f32_to_bf16

RTOL = 1e-4
ATOL = 1e-4


def random_matrix(rng, rows: int, cols: int, dtype: str = "f32", name: str = "w", scale: float = 0.5) -> WeightMatrix:
    values = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
    if dtype == "f32":
        return WeightMatrix(name, values, "f32", (rows, cols))
    if dtype == "f16":
        return WeightMatrix(name, values.astype(np.float16), "f16", (rows, cols))
    if dtype == "bf16":
        return WeightMatrix(name, f32_to_bf16(values), "bf16", (rows, cols))
    raise ValueError(dtype)


def random_vector(rng, n: int, name: str = "v", offset: float = 0.0) -> WeightVector:
    return WeightVector(name, (rng.standard_normal(n) * 0.5 + offset).astype(np.float32), "f32")


def _acts(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _cu(lengths):
    cu = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu[1:])
    return cu


@attrs.frozen
class Case:
    name: str
    run: Callable  # run(backend, rng) -> output as host arrays (tuple or array)
    rtol: float = RTOL
    atol: float = ATOL
    seed: int = 0

    def __str__(self) -> str:
        return self.name

    def check(self, backend, reference=None) -> None:
        reference = reference or NumpyBackend()
        expected = self.run(reference, np.random.default_rng(self.seed))
        actual = self.run(backend, np.random.default_rng(self.seed))
        expected = expected if isinstance(expected, tuple) else (expected,)
        actual = actual if isinstance(actual, tuple) else (actual,)
        for i, (e, a) in enumerate(zip(expected, actual)):
            e, a = np.asarray(e), np.asarray(a)
            if e.shape != a.shape:
                raise AssertionError(f"{self.name}: output {i} has shape {a.shape}, expected {e.shape}")
            np.testing.assert_allclose(a, e, rtol=self.rtol, atol=self.atol,
                                       err_msg=f"{self.name}: output {i} differs from the numpy reference")


def _linear(t, n_in, n_out, dtype, bias, act):
    def run(b, rng):
        w = b.prepare_matrix(random_matrix(rng, n_out, n_in, dtype, scale=1.0 / np.sqrt(n_in)))
        bv = b.prepare_vector(random_vector(rng, n_out)) if bias else None
        return b.download(b.linear(b.upload(_acts(rng, t, n_in)), w, bv, act))
    return Case(f"linear-{dtype}-{t}x{n_in}->{n_out}-bias{int(bias)}-{act}", run)


def _embedding(v, d, dtype):
    def run(b, rng):
        table = b.prepare_matrix(random_matrix(rng, v, d, dtype))
        ids = rng.integers(0, v, size=13).astype(np.int32)
        return b.download(b.embedding(table, b.upload(ids)))
    return Case(f"embedding-{dtype}-{v}x{d}", run)


def _layer_norm(t, d, residual, bias=True):
    def run(b, rng):
        w, bb = b.prepare_vector(random_vector(rng, d, offset=1.0)), b.prepare_vector(random_vector(rng, d))
        x = b.upload(_acts(rng, t, d, scale=3.0) + 2.0)
        r = b.upload(_acts(rng, t, d)) if residual else None
        return b.download(b.layer_norm(x, w, bb if bias else None, 1e-12, r))
    return Case(f"layer_norm-{t}x{d}-res{int(residual)}-bias{int(bias)}", run)


def _rms_norm(t, d):
    def run(b, rng):
        w = b.prepare_vector(random_vector(rng, d, offset=1.0))
        x, r = b.upload(_acts(rng, t, d, scale=2.0)), b.upload(_acts(rng, t, d))
        y1 = b.download(b.rms_norm(x, w, 1e-6))
        y2, h = b.add_rms_norm(x, r, w, 1e-6)
        return y1, b.download(y2), b.download(h)
    return Case(f"rms_norm-{t}x{d}", run)


def _elementwise(t, d):
    def run(b, rng):
        x, y = b.upload(_acts(rng, t, d)), b.upload(_acts(rng, t, d))
        vec = b.prepare_vector(random_vector(rng, d))
        col = b.upload(_acts(rng, t, 1))
        outs = [b.add(x, y), b.add(x, vec), b.mul(x, y), b.mul(x, vec), b.mul(x, col), b.silu_mul(x, y)]
        outs += [b.activation(x, k) for k in ("gelu", "gelu_tanh", "relu", "silu")]
        outs += [b.softmax(x)]
        return tuple(b.download(o) for o in outs)
    return Case(f"elementwise-{t}x{d}", run)


def _shapes(t, sizes):
    def run(b, rng):
        x = b.upload(_acts(rng, t, sum(sizes)))
        parts = [b.download(p) for p in b.split(x, sizes)]
        rows = np.array([t - 1, 0, t // 2], dtype=np.int32)
        viewed = b.download(b.view(b.take_rows(x, rows), (3, sum(sizes))))
        return tuple(parts) + (viewed,)
    return Case(f"split-view-take-{t}x{sizes}", run)


def _scatter(n, d, t):
    def run(b, rng):
        rows = rng.permutation(n)[:t].astype(np.int32)  # distinct, unordered
        dst = b.zeros((n, d))
        b.scatter_rows(dst, rows, b.upload(_acts(rng, t, d)))
        written = b.download(b.take_rows(dst, rows))
        b.scatter_rows(dst, rows[::-1].copy(), b.upload(_acts(rng, t, d)), accumulate=True)
        b.scatter_rows(dst, rows[:1].copy(), b.upload(_acts(rng, 1, d)))  # overwrite after a sum
        return written, b.download(dst)
    return Case(f"zeros-scatter_rows-{n}x{d}-t{t}", run)


def _top_k(t, n, k):
    def run(b, rng):
        values, idx = b.top_k(b.upload(_acts(rng, t, n)), k)
        return np.asarray(values), np.asarray(idx).astype(np.int64)
    return Case(f"top_k-{t}x{n}-k{k}", run)


def _rope(t, h, d, rot, style, scale):
    def run(b, rng):
        x = b.upload(_acts(rng, t, h, d))
        positions = rng.integers(0, 5000, size=t).astype(np.int32)
        inv_freq = (1.0 / 10000 ** (np.arange(0, rot, 2, dtype=np.float32) / rot)).astype(np.float32)
        return b.download(b.rope(x, positions, inv_freq, style, scale))
    return Case(f"rope-{style}-{t}x{h}x{d}-rot{rot}-scale{scale}", run, atol=2e-4)


def _attention(lengths_q, lengths_k, hq, hkv, d, causal, window=None):
    def run(b, rng):
        tq, tk = sum(lengths_q), sum(lengths_k)
        q = b.upload(_acts(rng, tq, hq, d))
        k = b.upload(_acts(rng, tk, hkv, d))
        v = b.upload(_acts(rng, tk, hkv, d))
        return b.download(b.attention(q, k, v, _cu(lengths_q), _cu(lengths_k), 1.0 / np.sqrt(d), causal, window))
    tag = f"attention-q{lengths_q}-k{lengths_k}-h{hq}/{hkv}-d{d}-causal{int(causal)}-win{window}"
    return Case(tag, run)


def kv_cache_setup(b, rng, history, new, hkv: int, d: int, rope=None):
    """The setup of a ``kv_attention`` case, for plugin authors' own tests too: sequences with
    ``history[i]`` cached tokens (random pool slots, random rows in both caches) take ``new[i]``
    tokens; ``rope`` is None or (rotated dims, style, scale). Returns (k_cache, v_cache, plan)."""
    slots = sum(history) + sum(new) + 3
    perm = rng.permutation(slots).astype(np.int32)
    seq_slots, at = [], 0
    for h, n in zip(history, new):
        seq_slots.append(perm[at:at + h + n])
        at += h + n
    kc, vc = b.zeros((slots, hkv * d)), b.zeros((slots, hkv * d))
    past = np.concatenate([s[:h] for s, h in zip(seq_slots, history)])
    if past.size:
        b.scatter_rows(kc, past, b.upload(_acts(rng, past.size, hkv * d)))
        b.scatter_rows(vc, past, b.upload(_acts(rng, past.size, hkv * d)))
    write = np.concatenate([s[h:] for s, h in zip(seq_slots, history)])
    read = np.concatenate(seq_slots) if any(history) else None
    positions = np.concatenate([np.arange(h, h + n, dtype=np.int32) for h, n in zip(history, new)])
    inv_freq, style, scale = None, "neox", 1.0
    if rope is not None:
        rot, style, scale = rope
        inv_freq = (1.0 / 10000 ** (np.arange(0, rot, 2, dtype=np.float32) / rot)).astype(np.float32)
    plan = b.kv_attention_plan(positions, _cu(new), _cu([h + n for h, n in zip(history, new)]), write, read,
                               inv_freq, style, scale)
    return kc, vc, plan


def _kv_attention(history, new, hq, hkv, d, rope=None, window=None):
    """``kv_attention``: sequences with ``history[i]`` cached tokens (random pool slots) take
    ``new[i]`` tokens; ``rope`` is None or (rotated dims, style, scale)."""
    def run(b, rng):
        kc, vc, plan = kv_cache_setup(b, rng, history, new, hkv, d, rope)
        t = sum(new)
        q, k, v = (b.upload(_acts(rng, t, h, d)) for h in (hq, hkv, hkv))
        out = b.kv_attention(q, k, v, kc, vc, plan, 1.0 / np.sqrt(d), window)
        return b.download(out), b.download(kc), b.download(vc)
    return Case(f"kv_attention-hist{history}-new{new}-h{hq}/{hkv}-d{d}-rope{rope}-win{window}", run, atol=2e-4)


def conformance_cases() -> list[Case]:
    cases = []
    for dtype in ("f32", "f16", "bf16"):
        cases += [_linear(1, 37, 23, dtype, False, None), _linear(7, 64, 96, dtype, True, "gelu"),
                  _linear(33, 129, 65, dtype, True, None), _embedding(50, 17, dtype)]
    for act in ("gelu_tanh", "relu", "silu"):
        cases.append(_linear(5, 40, 31, "f32", True, act))
    cases += [_layer_norm(1, 7, False), _layer_norm(9, 384, True), _layer_norm(4, 33, True, bias=False),
              _rms_norm(1, 5), _rms_norm(11, 96), _elementwise(3, 17), _elementwise(17, 130),
              _shapes(5, (7, 7, 3)), _top_k(6, 9, 2), _top_k(3, 64, 8),
              _scatter(1, 5, 1), _scatter(37, 24, 13), _scatter(300, 64, 300)]
    cases += [_rope(5, 3, 16, 16, "neox", 1.0), _rope(4, 2, 12, 8, "interleaved", 1.0),
              _rope(3, 4, 64, 32, "neox", 1.2), _rope(2, 1, 10, 10, "interleaved", 1.0)]
    cases += [
        _attention([5], [5], 4, 4, 8, False),
        _attention([1, 9, 4], [1, 9, 4], 2, 2, 16, False),
        _attention([3, 1, 7], [3, 1, 7], 6, 2, 8, True),
        _attention([1, 1], [17, 5], 8, 1, 32, True),  # decode: one query over cached keys
        _attention([4, 2], [10, 2], 4, 2, 12, True),  # chunked prefill after a cache
        _attention([300], [300], 2, 1, 8, True),  # longer than one key block
        _attention([9], [9], 2, 2, 8, True, window=3),
        _attention([2, 3], [2, 3], 3, 3, 5, False),
    ]
    cases += [
        _kv_attention([16, 0, 40], [1, 1, 2], 6, 2, 16, (16, "neox", 1.0)),  # decode steps
        _kv_attention([0, 0], [5, 3], 4, 4, 8, (8, "neox", 1.0)),  # prompts: keys are the new tokens
        _kv_attention([7, 150], [1, 1], 3, 1, 10, (6, "interleaved", 1.1), window=20),
        _kv_attention([5, 9], [1, 2], 4, 2, 8),  # no rotary
        _kv_attention([4, 0], [9, 1], 4, 2, 12, (12, "neox", 1.0), window=5),  # a chunk after a cache
    ]
    return cases


def check_backend(backend, reference=None) -> list[str]:
    """Run every case; returns the failures' messages (empty when the backend conforms)."""
    failures = []
    for case in conformance_cases():
        try:
            case.check(backend, reference)
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{case.name}: {exc}")
    return failures


# -- for architecture plugins' tests ---------------------------------------------------------------

def available_backends(registry=None) -> list[str]:
    """The names of the installed backends that are available here, best first."""
    from .plugins import get_registry
    from .selection import backend_statuses

    return [s.name for s in backend_statuses(registry or get_registry()) if s.available]


def backend_fixture(scope: str = "module"):
    """A pytest fixture: each backend of ``available_backends()`` in turn, created once per
    ``scope``. Assign it to the name tests ask for: ``backend = backend_fixture()``."""
    import pytest  # a test dependency, never gllm's

    @pytest.fixture(params=available_backends(), scope=scope)
    def backend(request):
        from .plugins import get_registry
        from .selection import create_backend

        return create_backend(get_registry(), request.param)

    return backend


def load_folder(folder: str | os.PathLike, backend, registry=None):
    """The ``LoadedModel`` of a model folder (named after the folder) on ``backend``."""
    from .loader import load_model
    from .plugins import get_registry

    return load_model(Path(folder).name, os.fspath(folder), backend, registry or get_registry())


def load_reference(folder: str | os.PathLike):
    """The arrays a fixture tool saved beside a model, from ``reference.npz`` in its folder."""
    return np.load(Path(folder) / "reference.npz")
