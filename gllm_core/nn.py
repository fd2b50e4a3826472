"""Layers that architectures are built from.

Each layer prepares its weights on the backend once and keeps a direct reference to the
backend kernel it calls, so a forward pass does no lookup and no dispatch.
"""

from __future__ import annotations

import numpy as np

from .errors import CorruptFileError
from .weights import WeightMatrix, WeightVector


def concat_rows(name: str, parts: list[WeightMatrix]) -> WeightMatrix:
    """Stack matrices with the same columns and storage type along rows (fused Q/K/V, gate/up).

    The copy keeps the stored type (f16 stays f16, quantized stays quantized)."""
    first = parts[0]
    for p in parts[1:]:
        if p.dtype != first.dtype or p.cols != first.cols:
            raise CorruptFileError(f"{name}: cannot fuse {p.name} ({p.dtype}, {p.cols} columns) with "
                                   f"{first.name} ({first.dtype}, {first.cols} columns)")
    data = np.concatenate([np.asarray(p.data) for p in parts], axis=0)
    return WeightMatrix(name, data, first.dtype, (sum(p.rows for p in parts), first.cols), first.quant)


def concat_vectors(name: str, parts: list[WeightVector]) -> WeightVector:
    data = np.concatenate([p.to_float32() for p in parts])
    return WeightVector(name, data, "f32")


class Linear:
    """``act(x @ W.T + b)``."""

    def __init__(self, backend, weight: WeightMatrix, bias: WeightVector | None = None,
                 activation: str | None = None):
        if bias is not None and bias.shape[0] != weight.rows:
            raise CorruptFileError(f"{bias.name}: bias of {bias.shape[0]} for {weight.rows} outputs")
        self.out_features, self.in_features = weight.shape
        self.weight = backend.prepare_matrix(weight)
        self.bias = None if bias is None else backend.prepare_vector(bias)
        self.activation = activation
        self._linear = backend.linear

    def __call__(self, x):
        return self._linear(x, self.weight, self.bias, self.activation)


class Embedding:
    def __init__(self, backend, table: WeightMatrix):
        self.num_embeddings, self.dim = table.shape
        self.table = backend.prepare_matrix(table)
        self._lookup = backend.embedding
        self._upload = backend.upload

    def __call__(self, ids: np.ndarray):
        return self._lookup(self.table, self._upload(np.asarray(ids, dtype=np.int32)))


class LayerNorm:
    def __init__(self, backend, weight: WeightVector, bias: WeightVector | None, eps: float):
        self.weight = backend.prepare_vector(weight)
        self.bias = None if bias is None else backend.prepare_vector(bias)
        self.eps = float(eps)
        self._norm = backend.layer_norm

    def __call__(self, x, residual=None):
        return self._norm(x, self.weight, self.bias, self.eps, residual)


class RMSNorm:
    def __init__(self, backend, weight: WeightVector, eps: float):
        self.weight = backend.prepare_vector(weight)
        self.eps = float(eps)
        self._norm = backend.rms_norm
        self._add_norm = backend.add_rms_norm

    def __call__(self, x):
        return self._norm(x, self.weight, self.eps)

    def add(self, x, residual):
        """Returns (norm(x + residual), x + residual)."""
        return self._add_norm(x, residual, self.weight, self.eps)


def expect_shape(w, shape: tuple, what: str):
    if tuple(w.shape) != tuple(shape):
        raise CorruptFileError(f"{w.name}: {what} should have shape {tuple(shape)}, found {tuple(w.shape)}")
    return w


# -- decoder blocks ----------------------------------------------------------------------------

def _zeros_vector(name: str, n: int) -> WeightVector:
    return WeightVector(name, np.zeros(n, dtype=np.float32), "f32")


class FusedLinear:
    """Linears that read the same input (Q/K/V, gate/up), run as one GEMM when their storage
    types match and split after; separately when they don't (GGUF may mix quant types)."""

    def __init__(self, backend, name: str, weights: list[WeightMatrix], biases: list[WeightVector | None] | None = None):
        biases = biases or [None] * len(weights)
        for w, b in zip(weights, biases):
            if b is not None and b.shape[0] != w.rows:
                raise CorruptFileError(f"{b.name}: bias of {b.shape[0]} for {w.rows} outputs of {w.name}")
        self.sizes = [w.rows for w in weights]
        first = weights[0]
        fusable = all(w.dtype == first.dtype and w.cols == first.cols for w in weights)
        if fusable and len(weights) > 1:
            bias = None
            if any(b is not None for b in biases):
                bias = concat_vectors(name + ".bias", [b if b is not None else _zeros_vector(w.name, w.rows)
                                                       for w, b in zip(weights, biases)])
            self.fused = Linear(backend, concat_rows(name, weights), bias)
            self.parts = None
        else:
            self.fused = None
            self.parts = [Linear(backend, w, b) for w, b in zip(weights, biases)]
        self._split = backend.split

    def __call__(self, x) -> list:
        if self.fused is not None:
            return self._split(self.fused(x), self.sizes)
        return [part(x) for part in self.parts]


class AttentionBatch:
    """What every attention layer of one forward pass shares: token positions, the rotary
    frequencies, packed-sequence offsets and the KV-cache slots to write and to read."""

    __slots__ = ("n_tokens", "positions", "inv_freq", "rope_scale", "cu_seqlens_q", "cu_seqlens_k",
                 "n_keys", "write_slots", "read_slots", "pool", "_plans")

    def __init__(self, n_tokens, positions, inv_freq, rope_scale, cu_seqlens_q, cu_seqlens_k, n_keys,
                 write_slots, read_slots, pool):
        self.n_tokens, self.positions, self.inv_freq, self.rope_scale = n_tokens, positions, inv_freq, rope_scale
        self.cu_seqlens_q, self.cu_seqlens_k, self.n_keys = cu_seqlens_q, cu_seqlens_k, n_keys
        self.write_slots, self.read_slots, self.pool = write_slots, read_slots, pool
        self._plans = {}

    def plan(self, rope_style: str | None):
        """The backend's ``kv_attention_plan`` for layers rotating in ``rope_style`` (None: no
        RoPE), made once per forward pass and shared by those layers."""
        plan = self._plans.get(rope_style)
        if plan is None:
            rope = rope_style is not None and self.inv_freq is not None
            plan = self._plans[rope_style] = self.pool.backend.kv_attention_plan(
                self.positions, self.cu_seqlens_q, self.cu_seqlens_k, self.write_slots, self.read_slots,
                self.inv_freq if rope else None, rope_style or "neox", self.rope_scale)
        return plan


class Attention:
    """Causal self-attention: grouped KV heads, RoPE (neox or interleaved), optional Q/K/V/O
    biases and per-head Q/K RMSNorm (Qwen3), optional sliding window; keys and values go
    through the paged KV cache (``gllm_core.kv_cache``) at index ``layer``."""

    def __init__(self, backend, layer: int, *, q: WeightMatrix, k: WeightMatrix, v: WeightMatrix,
                 o: WeightMatrix, num_heads: int, num_kv_heads: int, head_dim: int, rotary=None,
                 q_bias: WeightVector | None = None, k_bias: WeightVector | None = None,
                 v_bias: WeightVector | None = None, o_bias: WeightVector | None = None,
                 q_norm: WeightVector | None = None, k_norm: WeightVector | None = None,
                 norm_eps: float = 1e-6, window: int | None = None, scale: float | None = None):
        if num_kv_heads < 1 or num_heads % num_kv_heads:
            raise CorruptFileError(f"{q.name}: {num_heads} query heads cannot share {num_kv_heads} KV heads")
        hidden = q.cols
        expect_shape(q, (num_heads * head_dim, hidden), "query projection")
        expect_shape(k, (num_kv_heads * head_dim, hidden), "key projection")
        expect_shape(v, (num_kv_heads * head_dim, hidden), "value projection")
        expect_shape(o, (hidden, num_heads * head_dim), "output projection")
        for norm in (q_norm, k_norm):
            if norm is not None and norm.shape != (head_dim,):
                raise CorruptFileError(f"{norm.name}: per-head norm should have shape ({head_dim},), found {norm.shape}")
        self.layer = layer
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.kv_width = num_kv_heads * head_dim
        self.qkv = FusedLinear(backend, q.name.rsplit(".", 2)[0] + ".qkv", [q, k, v], [q_bias, k_bias, v_bias])
        self.o = Linear(backend, o, o_bias)
        self.q_norm = None if q_norm is None else RMSNorm(backend, q_norm, norm_eps)
        self.k_norm = None if k_norm is None else RMSNorm(backend, k_norm, norm_eps)
        self.rotary = rotary
        self.style = rotary.style if rotary is not None else None
        self.window = window
        self.scale = float(head_dim ** -0.5 if scale is None else scale)
        self._view, self._kv_attention = backend.view, backend.kv_attention

    def __call__(self, x, batch: AttentionBatch):
        t, hq, hkv, d = batch.n_tokens, self.num_heads, self.num_kv_heads, self.head_dim
        view = self._view
        q, k, v = self.qkv(x)
        q, k, v = view(q, (t, hq, d)), view(k, (t, hkv, d)), view(v, (t, hkv, d))
        if self.q_norm is not None:
            q = self.q_norm(q)
        if self.k_norm is not None:
            k = self.k_norm(k)
        pool, layer = batch.pool, self.layer
        # RoPE, the KV-cache write and read, and attention: one backend op (one kernel in a decode step)
        ctx = self._kv_attention(q, k, v, pool.k[layer], pool.v[layer], batch.plan(self.style), self.scale,
                                 self.window)
        return self.o(view(ctx, (t, hq * d)))


class GatedMLP:
    """``down(act(gate(x)) * up(x))`` with act = SiLU (Llama, Qwen, Mistral)."""

    def __init__(self, backend, gate: WeightMatrix, up: WeightMatrix, down: WeightMatrix,
                 gate_bias: WeightVector | None = None, up_bias: WeightVector | None = None,
                 down_bias: WeightVector | None = None):
        expect_shape(up, gate.shape, "up projection")
        expect_shape(down, (gate.cols, gate.rows), "down projection")
        self.gate_up = FusedLinear(backend, gate.name.rsplit(".", 2)[0] + ".gate_up", [gate, up],
                                   [gate_bias, up_bias])
        self.down = Linear(backend, down, down_bias)
        self._silu_mul = backend.silu_mul

    def __call__(self, x):
        gate, up = self.gate_up(x)
        return self.down(self._silu_mul(gate, up))


class MoE:
    """Mixture of experts with a softmax top-k router (Qwen3-MoE, Mixtral, Qwen2-MoE's routed part).

    Router probabilities are ``softmax(x @ W_router.T)``; each token takes its ``top_k`` experts,
    weighted by their probabilities (renormalised to sum to 1 with ``norm_topk_prob``). Each
    expert runs once, on the group of tokens routed to it, and its weighted outputs are summed
    into their tokens' rows."""

    def __init__(self, backend, router: WeightMatrix, experts: list[GatedMLP], top_k: int, norm_topk_prob: bool):
        if router.rows != len(experts):
            raise CorruptFileError(f"{router.name}: router of {router.rows} experts for {len(experts)} experts")
        if not 1 <= top_k <= len(experts):
            raise CorruptFileError(f"{router.name}: cannot route each token to {top_k} of {len(experts)} experts")
        self.router = Linear(backend, router)
        self.experts = experts
        self.top_k = int(top_k)
        self.norm_topk_prob = bool(norm_topk_prob)
        self.hidden = router.cols
        b = backend
        self._softmax, self._top_k, self._zeros = b.softmax, b.top_k, b.zeros
        self._take, self._mul, self._scatter, self._upload = b.take_rows, b.mul, b.scatter_rows, b.upload

    def route(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Host ``(weights float32 [T, k], experts int32 [T, k])``."""
        weights, experts = self._top_k(self._softmax(self.router(x)), self.top_k)
        weights = np.asarray(weights, dtype=np.float32)
        if self.norm_topk_prob:
            weights = weights / weights.sum(-1, keepdims=True, dtype=np.float32)
        return weights.astype(np.float32), np.asarray(experts)

    def __call__(self, x):
        weights, experts = self.route(x)
        out = self._zeros((weights.shape[0], self.hidden))
        for e in np.unique(experts):
            tokens, slot = np.nonzero(experts == e)  # a token picks an expert at most once
            tokens = tokens.astype(np.int32)
            y = self.experts[int(e)](self._take(x, tokens))
            y = self._mul(y, self._upload(weights[tokens, slot][:, None]))
            self._scatter(out, tokens, y, accumulate=True)
        return out


class OutputHead:
    """Logits ``x @ W.T``: its own ``[vocab, hidden]`` matrix, or the token embedding's table when
    the checkpoint ties them (prepared once, shared)."""

    def __init__(self, backend, weight: WeightMatrix | None = None, tied_to: Embedding | None = None):
        if (weight is None) == (tied_to is None):
            raise ValueError("OutputHead needs exactly one of weight and tied_to")
        if weight is not None:
            self.vocab_size, self.hidden = weight.shape
            self.weight = backend.prepare_matrix(weight)
        else:
            self.vocab_size, self.hidden = tied_to.num_embeddings, tied_to.dim
            self.weight = tied_to.table
        self.tied = tied_to is not None
        self._linear = backend.linear

    def __call__(self, x):
        return self._linear(x, self.weight)
