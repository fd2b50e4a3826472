"""The backend contract: the ops every kernel set implements, with shapes and dtypes.

A backend works on its own array type ``A`` (numpy arrays for CPU backends, device buffers for
OpenCL). Activations are float32, token-major and packed: a batch of sequences of different
lengths is one ``[T, ...]`` array of all their tokens, with ``cu_seqlens`` (host int32 array of
B+1 offsets) saying where each sequence starts. No op ever computes on padding.

Weights are turned into the backend's resident form once, by ``prepare_matrix`` /
``prepare_vector``; ops then take the prepared objects, so a forward pass does no format
dispatch. The numpy backend (``gllm_core.backends.numpy_backend``) defines what every op means;
``gllm_core.testing`` checks any backend against it.

The KV cache (``gllm_core.kv_cache``) is backend-owned storage made by ``zeros``, written with
``scatter_rows`` and read with ``take_rows``. Ops to come as the families land: attention reading
a paged cache through block tables, quantized-activation linear variants, sink attention,
sigmoid-grouped top-k routing.
"""

from __future__ import annotations

import abc
from typing import Any, Sequence

import numpy as np

ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")


class Backend(abc.ABC):
    name: str = "abstract"

    # -- memory --------------------------------------------------------------------------------
    @abc.abstractmethod
    def upload(self, array: np.ndarray) -> Any:
        """Host array (float32 activations or int32 ids) → backend array."""

    @abc.abstractmethod
    def download(self, x: Any) -> np.ndarray:
        """Backend array → host numpy array."""

    @abc.abstractmethod
    def prepare_matrix(self, w) -> Any:
        """WeightMatrix → resident form, once per model (may keep f16/bf16/quantized storage)."""

    @abc.abstractmethod
    def prepare_vector(self, v) -> Any:
        """WeightVector → resident float32 form."""

    # -- shape ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def view(self, x: Any, shape: Sequence[int]) -> Any:
        """Reshape without copying (row-major, same element count)."""

    @abc.abstractmethod
    def split(self, x: Any, sizes: Sequence[int]) -> list[Any]:
        """Split ``[T, sum(sizes)]`` along the last axis into contiguous ``[T, size]`` arrays."""

    @abc.abstractmethod
    def take_rows(self, x: Any, rows: np.ndarray) -> Any:
        """``x[rows]`` for host int32 indices along the first axis."""

    @abc.abstractmethod
    def zeros(self, shape: Sequence[int]) -> Any:
        """A new float32 array of ``shape`` filled with zeros (KV-cache storage, MoE sums)."""

    @abc.abstractmethod
    def scatter_rows(self, dst: Any, rows: np.ndarray, src: Any, accumulate: bool = False) -> None:
        """In place ``dst[rows] = src``, or ``dst[rows] += src`` with ``accumulate``; returns None.

        ``dst`` ``[N, D]`` and ``src`` ``[T, D]`` float32, ``rows`` host int32 ``[T]``: distinct
        indices in ``[0, N)``. Writes new keys/values into the KV cache and sums MoE expert
        outputs into their tokens' rows."""

    # -- math ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def linear(self, x: Any, w: Any, bias: Any = None, activation: str | None = None) -> Any:
        """``act(x @ W.T + b)``: x ``[T, in]``, W prepared ``[out, in]``, b ``[out]`` → ``[T, out]``.

        ``activation`` is None or one of ACTIVATIONS ("gelu" is the exact erf form)."""

    @abc.abstractmethod
    def embedding(self, table: Any, ids: Any) -> Any:
        """Rows of a prepared ``[V, D]`` matrix for int32 ids ``[T]`` → ``[T, D]`` float32."""

    @abc.abstractmethod
    def add(self, a: Any, b: Any) -> Any:
        """Elementwise ``a + b``; ``b`` may also be a ``[D]`` vector broadcast over rows."""

    @abc.abstractmethod
    def mul(self, a: Any, b: Any) -> Any:
        """Elementwise ``a * b``; ``b`` may also be a ``[D]`` vector or a ``[T, 1]`` column."""

    @abc.abstractmethod
    def activation(self, x: Any, kind: str) -> Any:
        """One of ACTIVATIONS applied elementwise."""

    @abc.abstractmethod
    def silu_mul(self, gate: Any, up: Any) -> Any:
        """``silu(gate) * up`` (gated MLP), both ``[T, F]``."""

    @abc.abstractmethod
    def layer_norm(self, x: Any, weight: Any, bias: Any, eps: float, residual: Any = None) -> Any:
        """LayerNorm over the last axis of ``x + residual`` (residual optional), ``[T, D]``."""

    @abc.abstractmethod
    def rms_norm(self, x: Any, weight: Any, eps: float) -> Any:
        """``x / sqrt(mean(x²) + eps) * weight`` over the last axis; ``x`` is ``[..., D]``."""

    @abc.abstractmethod
    def add_rms_norm(self, x: Any, residual: Any, weight: Any, eps: float) -> tuple[Any, Any]:
        """``h = x + residual``; returns ``(rms_norm(h), h)`` (pre-norm decoder blocks)."""

    @abc.abstractmethod
    def rope(self, x: Any, positions: np.ndarray, inv_freq: np.ndarray, style: str = "neox",
             scale: float = 1.0) -> Any:
        """Rotary embedding of ``x [T, H, D]`` at int positions ``[T]`` (host).

        Angles are ``positions * inv_freq`` (``inv_freq`` float32 ``[R/2]``, R ≤ D rotated dims,
        the rest pass through); cos/sin are multiplied by ``scale`` (YaRN's attention factor).
        ``style="neox"`` rotates halves (x[:R/2], x[R/2:R]); ``"interleaved"`` rotates pairs
        (x[0::2], x[1::2]) within the first R dims."""

    @abc.abstractmethod
    def attention(self, q: Any, k: Any, v: Any, cu_seqlens_q: np.ndarray, cu_seqlens_k: np.ndarray,
                  scale: float, causal: bool = False, window: int | None = None) -> Any:
        """Scaled dot-product attention over packed sequences.

        q ``[Tq, Hq, D]``, k ``[Tk, Hkv, D]``, v ``[Tk, Hkv, Dv]`` with ``Hq % Hkv == 0`` (query
        head h reads KV head ``h // (Hq // Hkv)``). Sequence b's queries are rows
        ``cu_seqlens_q[b]:cu_seqlens_q[b+1]`` and its keys rows of ``cu_seqlens_k`` likewise.
        With ``causal``, the queries are the last ``Lq`` positions of the ``Lk`` keys (query i
        sees keys ``j <= Lk - Lq + i``); ``window`` further limits it to the last ``window``
        keys. Softmax subtracts the running maximum. Returns ``[Tq, Hq, Dv]``."""

    @abc.abstractmethod
    def softmax(self, x: Any) -> Any:
        """Softmax over the last axis (max-subtracted)."""

    @abc.abstractmethod
    def top_k(self, x: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Host ``(values, indices)`` of the k largest entries of each row of ``x [T, N]``,
        in descending order (MoE routing)."""
