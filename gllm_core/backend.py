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
``scatter_rows`` and read with ``take_rows``; ``kv_attention`` does an attention layer's RoPE,
cache write and attention over the cache's rows in one op (composed of the others unless a
backend fuses it). Ops to come as the families land: quantized-activation linear variants, sink
attention, sigmoid-grouped top-k routing.
"""

from __future__ import annotations

import abc
from typing import Any, Sequence

import numpy as np

from .errors import BadRequestError

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

    # -- attention through the KV cache (not abstract: composed of the ops above by default;
    # a backend overrides both to fuse a decode step into one kernel) ---------------------------
    def kv_attention_plan(self, positions: np.ndarray, cu_seqlens_q: np.ndarray, cu_seqlens_k: np.ndarray,
                          write_slots: np.ndarray, read_slots: np.ndarray | None, inv_freq: np.ndarray | None = None,
                          rope_style: str = "neox", rope_scale: float = 1.0) -> "KVAttentionPlan":
        """What every attention layer of one forward pass shares, checked and prepared once.

        ``positions [T]`` of the new tokens; packed offsets as for ``attention``; ``write_slots
        [T]``: the cache rows their keys and values go to; ``read_slots [Tk]``: the cache rows of
        each sequence's keys in order (``cu_seqlens_k`` delimits them), or None when every
        sequence starts in this pass (its keys are the new ones); rotary frequencies as for
        ``rope`` (None: no rotation). All host int32 / float32 arrays."""
        return KVAttentionPlan(positions, cu_seqlens_q, cu_seqlens_k, write_slots, read_slots, inv_freq,
                               rope_style, rope_scale)

    def kv_attention(self, q: Any, k: Any, v: Any, k_cache: Any, v_cache: Any, plan: "KVAttentionPlan",
                     scale: float, window: int | None = None) -> Any:
        """Causal self-attention of new tokens through one layer's KV cache.

        q ``[T, Hq, D]`` and k ``[T, Hkv, D]`` are rotated with the plan's frequencies; k and
        v ``[T, Hkv, Dv]`` are written to rows ``write_slots`` of ``k_cache [S, Hkv * D]`` and
        ``v_cache [S, Hkv * Dv]``; then ``attention`` of q over each sequence's keys and values
        (cache rows ``read_slots``). Returns ``[T, Hq, Dv]``."""
        t, hkv, d = k.shape
        dv = v.shape[2]
        if plan.inv_freq is not None:
            q = self.rope(q, plan.positions, plan.inv_freq, plan.rope_style, plan.rope_scale)
            k = self.rope(k, plan.positions, plan.inv_freq, plan.rope_style, plan.rope_scale)
        self.scatter_rows(k_cache, plan.write_slots, self.view(k, (t, hkv * d)))
        self.scatter_rows(v_cache, plan.write_slots, self.view(v, (t, hkv * dv)))
        if plan.read_slots is None:
            keys, values = k, v
        else:
            n = int(plan.cu_seqlens_k[-1])
            keys = self.view(self.take_rows(k_cache, plan.read_slots), (n, hkv, d))
            values = self.view(self.take_rows(v_cache, plan.read_slots), (n, hkv, dv))
        return self.attention(q, keys, values, plan.cu_seqlens_q, plan.cu_seqlens_k, scale, True, window)


class KVAttentionPlan:
    """``Backend.kv_attention_plan``'s arguments; a backend may subclass it to keep more."""

    __slots__ = ("positions", "cu_seqlens_q", "cu_seqlens_k", "write_slots", "read_slots", "inv_freq",
                 "rope_style", "rope_scale")

    def __init__(self, positions, cu_seqlens_q, cu_seqlens_k, write_slots, read_slots, inv_freq=None,
                 rope_style="neox", rope_scale=1.0):
        self.positions, self.cu_seqlens_q, self.cu_seqlens_k = positions, cu_seqlens_q, cu_seqlens_k
        self.write_slots, self.read_slots = write_slots, read_slots
        self.inv_freq, self.rope_style, self.rope_scale = inv_freq, rope_style, rope_scale


def checked_kv_layout(positions, cu_seqlens_q, cu_seqlens_k, write_slots, read_slots, rope_style: str, dtype):
    """``kv_attention_plan``'s arguments checked for a backend that overrides it: the arrays as
    flat ``dtype`` (cu_q, cu_k, positions, write, read or None), the cache rows attention reads
    (``read``, or ``write`` when every sequence starts in this pass), the number of new tokens and
    the largest slot. Raises BadRequestError when they do not describe the same packed sequences."""
    if rope_style not in ("neox", "interleaved"):
        raise BadRequestError(f"kv_attention_plan: unknown rope style {rope_style!r} (neox or interleaved)")
    cu_q, cu_k, pos, write = (np.ascontiguousarray(a, dtype=dtype).reshape(-1)
                              for a in (cu_seqlens_q, cu_seqlens_k, positions, write_slots))
    read = None if read_slots is None else np.ascontiguousarray(read_slots, dtype=dtype).reshape(-1)
    tokens = int(cu_q[-1]) if cu_q.size else -1
    lq, lk = np.diff(cu_q), np.diff(cu_k)
    if (cu_q.size < 2 or cu_q.shape != cu_k.shape or cu_q[0] != 0 or cu_k[0] != 0 or np.any(lq < 0)
            or np.any(lk < lq) or pos.shape[0] != tokens or write.shape[0] != tokens
            or (read is None and not np.array_equal(cu_q, cu_k))
            or (read is not None and read.shape[0] != cu_k[-1])):
        raise BadRequestError("kv_attention_plan: positions, cu_seqlens and cache slots do not describe "
                              "the same packed sequences")
    rows = write if read is None else read
    if (write.size and int(write.min()) < 0) or (rows.size and int(rows.min()) < 0):
        raise BadRequestError("kv_attention_plan: negative KV-cache slot")
    max_slot = max(int(write.max()) if write.size else -1, int(rows.max()) if rows.size else -1)
    return cu_q, cu_k, pos, write, read, rows, tokens, max_slot
