"""DecoderLM: the generic pre-norm decoder-only transformer that architecture plugins configure.

Read beside transformers' ``modeling_llama.py``: token embedding → N × (RMSNorm → attention →
residual → RMSNorm → gated MLP or MoE → residual) → RMSNorm → output head. A family plugin
states how it differs (biases, Q/K norms, which layers are MoE, RoPE layout) in
``DecoderOptions`` and calls ``build_decoder``; weights are read by their Hugging Face names
(``model.layers.N.self_attn.q_proj.weight`` …), which other weight formats map onto.

``DecoderLM`` implements ``gllm_core.causal_lm.CausalLM``: ``forward`` runs new tokens of several
sequences as one packed batch, each sequence with its own paged KV cache.
"""

from __future__ import annotations

from typing import Sequence

import attrs
import numpy as np

from .errors import BadRequestError, CorruptFileError, UnsupportedArchitectureError
from .kv_cache import KVPool, PagedKVCache
from .nn import Attention, AttentionBatch, Embedding, GatedMLP, MoE, OutputHead, RMSNorm, expect_shape
from .rope import Rotary
from .weights import WeightMatrix, WeightVector

DEFAULT_KV_BLOCK_SIZE = 256


@attrs.frozen
class DecoderOptions:
    """What a family changes in the generic decoder."""

    prefix: str = "model."
    attention_bias: bool = False  # q/k/v/o biases (Llama's attention_bias)
    qkv_bias: bool = False  # q/k/v biases only (Qwen2)
    mlp_bias: bool = False  # gate/up/down biases (Llama's mlp_bias)
    qk_norm: bool = False  # per-head RMSNorm of queries and keys before RoPE (Qwen3)
    rope_style: str = "neox"  # "interleaved" for checkpoints whose Q/K rows rotate adjacent pairs
    moe_layers: frozenset[int] = frozenset()  # layers whose MLP is a mixture of experts
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0  # each expert's gate/up rows (0: not checked)
    norm_topk_prob: bool = False


class DecoderLayer:
    __slots__ = ("input_norm", "attention", "post_attention_norm", "mlp")

    def __init__(self, input_norm: RMSNorm, attention: Attention, post_attention_norm: RMSNorm, mlp):
        self.input_norm, self.attention = input_norm, attention
        self.post_attention_norm, self.mlp = post_attention_norm, mlp


class DecoderLM:
    """A decoder-only language model over one backend (``CausalLM``)."""

    tasks = ("generate",)

    def __init__(self, backend, *, embed: Embedding, layers: list[DecoderLayer], norm: RMSNorm,
                 head: OutputHead, rotary: Rotary | None, max_position_embeddings: int,
                 kv_block_size: int = DEFAULT_KV_BLOCK_SIZE):
        self.backend = backend
        self.embed, self.layers, self.norm, self.head = embed, layers, norm, head
        self.rotary = rotary
        self.vocab_size = head.vocab_size
        self.max_position_embeddings = int(max_position_embeddings)
        a = layers[0].attention
        self._kv_widths = (a.kv_width, a.kv_width)
        self.kv_pool = KVPool(backend, len(layers), *self._kv_widths, block_size=kv_block_size)
        b = backend
        self._take, self._download = b.take_rows, b.download

    # -- caches --------------------------------------------------------------------------------
    def new_cache(self) -> PagedKVCache:
        return PagedKVCache(self.kv_pool)

    def set_kv_block_size(self, block_size: int) -> None:
        """Use blocks of ``block_size`` tokens from now on (only while no cache holds blocks)."""
        if self.kv_pool.blocks_in_use:
            raise BadRequestError("cannot change the KV block size while caches hold blocks")
        self.kv_pool = KVPool(self.backend, len(self.layers), *self._kv_widths, block_size=block_size)

    # -- forward -------------------------------------------------------------------------------
    def _check(self, tokens, caches) -> list[np.ndarray]:
        if len(tokens) != len(caches) or not tokens:
            raise BadRequestError(f"forward needs one cache per sequence: {len(tokens)} sequences, {len(caches)} caches")
        ids_list = []
        for i, (ids, cache) in enumerate(zip(tokens, caches)):
            if not isinstance(cache, PagedKVCache) or cache.pool is not self.kv_pool:
                raise BadRequestError(f"cache {i} was not made by this model's new_cache()")
            if cache.freed:
                raise BadRequestError(f"cache {i} was freed")
            try:
                arr = np.asarray(ids)
                if arr.ndim != 1 or arr.size == 0 or (arr.dtype.kind not in "iu" and arr.dtype != object):
                    raise TypeError
                if arr.dtype == object and not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool)
                                                   for t in arr):
                    raise TypeError
                arr = arr.astype(np.int64)
            except (TypeError, ValueError, OverflowError):
                raise BadRequestError(f"tokens[{i}] must be a non-empty list of integer token ids") from None
            if arr.min() < 0 or arr.max() >= self.vocab_size:
                bad = int(arr[(arr < 0) | (arr >= self.vocab_size)][0])
                raise BadRequestError(f"tokens[{i}] holds id {bad}, outside the vocabulary of {self.vocab_size}")
            ids_list.append(arr.astype(np.int32))
        if len({id(c) for c in caches}) != len(caches):
            raise BadRequestError("the same cache appears twice in one forward call")
        return ids_list

    def forward(self, tokens: Sequence[Sequence[int]], caches: Sequence[PagedKVCache],
                all_logits: bool = False) -> np.ndarray | list[np.ndarray]:
        ids_list = self._check(tokens, caches)
        # length-dependent RoPE (dynamic NTK, LongRoPE): sequences at different lengths rotate
        # with different frequencies, so they run in separate batches
        rotary = self.rotary
        keys = [None if rotary is None else rotary.key(c.length + len(ids)) for ids, c in zip(ids_list, caches)]
        groups: dict = {}
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        if len(groups) == 1:
            return self._forward(ids_list, list(caches), all_logits)
        out: list = [None] * len(ids_list)
        for members in groups.values():
            result = self._forward([ids_list[i] for i in members], [caches[i] for i in members], all_logits)
            for j, i in enumerate(members):
                out[i] = result[j]
        return out if all_logits else np.stack(out)

    def _forward(self, ids_list: list[np.ndarray], caches: list[PagedKVCache], all_logits: bool):
        lengths = [len(ids) for ids in ids_list]
        starts = [c.length for c in caches]
        for cache, start, n in zip(caches, starts, lengths):
            cache.reserve(start + n)
        cu_q = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=cu_q[1:])
        cu_k = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum([s + n for s, n in zip(starts, lengths)], out=cu_k[1:])
        positions = np.concatenate([np.arange(s, s + n, dtype=np.int32) for s, n in zip(starts, lengths)])
        write_slots = np.concatenate([c.slots(s, s + n) for c, s, n in zip(caches, starts, lengths)])
        read_slots = None
        if any(starts):
            read_slots = np.concatenate([c.slots(0, s + n) for c, s, n in zip(caches, starts, lengths)])
        if self.rotary is not None:
            inv_freq, rope_scale = self.rotary.at(starts[0] + lengths[0])  # one frequency set per group
        else:
            inv_freq, rope_scale = None, 1.0
        n_tokens = int(cu_q[-1])
        batch = AttentionBatch(n_tokens, positions, inv_freq, rope_scale, cu_q, cu_k, int(cu_k[-1]),
                               write_slots, read_slots, self.kv_pool)

        h = self.embed(np.concatenate(ids_list))
        residual = None
        for layer in self.layers:
            if residual is None:
                normed, residual = layer.input_norm(h), h
            else:
                normed, residual = layer.input_norm.add(h, residual)
            h = layer.attention(normed, batch)
            normed, residual = layer.post_attention_norm.add(h, residual)
            h = layer.mlp(normed)
        # only the last token of each sequence needs logits (a decode step has nothing else)
        if not all_logits and n_tokens > len(lengths):
            rows = (cu_q[1:] - 1).astype(np.int32)
            h, residual = self._take(h, rows), self._take(residual, rows)
        normed, _ = self.norm.add(h, residual)
        logits = np.asarray(self._download(self.head(normed)), dtype=np.float32)
        for cache, n in zip(caches, lengths):
            cache.advance(n)
        if all_logits:
            return [logits[cu_q[i]:cu_q[i + 1]] for i in range(len(lengths))]
        return logits


# -- building from a checkpoint ----------------------------------------------------------------

def layer_windows(config) -> list[int | None]:
    """Sliding-window size of each layer (None: full attention), as transformers reads the config:
    ``layer_types`` when given, else Qwen2's ``use_sliding_window`` from ``max_window_layers`` on."""
    raw, n = config.raw, config.num_hidden_layers
    window = raw.get("sliding_window")
    types = raw.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != n:
            raise CorruptFileError(f"{config.path}/config.json: layer_types must list {n} layer types")
        unknown = set(types) - {"full_attention", "sliding_attention"}
        if unknown:
            raise UnsupportedArchitectureError(f"{config.path}/config.json: layer types {sorted(unknown)} are not supported")
        if "sliding_attention" in types and (not isinstance(window, int) or window < 1):
            raise CorruptFileError(f"{config.path}/config.json: sliding_attention layers need a positive sliding_window")
        return [window if t == "sliding_attention" else None for t in types]
    if raw.get("use_sliding_window") and isinstance(window, int) and window > 0:
        first = raw.get("max_window_layers", n)
        return [window if i >= first else None for i in range(n)]
    return [None] * n


def _check_config(config) -> None:
    where = f"{config.path or '<config>'}/config.json"
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "head_dim"):
        if not getattr(config, name):
            raise CorruptFileError(f"{where}: {name} must be a positive integer")
    if config.hidden_act not in ("silu", "swish"):
        raise UnsupportedArchitectureError(f"{where}: hidden_act {config.hidden_act!r} is not supported (silu)")


def build_decoder(config, weights, backend, options: DecoderOptions = DecoderOptions(),
                  kv_block_size: int = DEFAULT_KV_BLOCK_SIZE) -> DecoderLM:
    """A ``DecoderLM`` from a ``ModelConfig`` and a weight source with Hugging Face tensor names."""
    _check_config(config)
    p = options.prefix
    get = _typed_getter(weights)

    def maybe(name: str, wanted: bool):
        return get(name) if wanted else None

    embed_table = get(p + "embed_tokens.weight")
    hidden = config.hidden_size
    expect_shape(embed_table, (embed_table.rows, hidden), "token embedding")
    embed = Embedding(backend, embed_table)
    rotary = Rotary(config, config.head_dim, options.rope_style)
    windows = layer_windows(config)
    eps = config.rms_norm_eps
    qkv_bias = options.qkv_bias or options.attention_bias
    layers = []
    for i in range(config.num_hidden_layers):
        lp = f"{p}layers.{i}."
        a = lp + "self_attn."
        attention = Attention(
            backend, i,
            q=_columns(get(a + "q_proj.weight"), hidden), k=get(a + "k_proj.weight"), v=get(a + "v_proj.weight"),
            o=get(a + "o_proj.weight"),
            q_bias=maybe(a + "q_proj.bias", qkv_bias), k_bias=maybe(a + "k_proj.bias", qkv_bias),
            v_bias=maybe(a + "v_proj.bias", qkv_bias), o_bias=maybe(a + "o_proj.bias", options.attention_bias),
            q_norm=maybe(a + "q_norm.weight", options.qk_norm), k_norm=maybe(a + "k_norm.weight", options.qk_norm),
            num_heads=config.num_attention_heads, num_kv_heads=config.num_key_value_heads,
            head_dim=config.head_dim, rotary=rotary, norm_eps=eps, window=windows[i])
        m = lp + "mlp."
        if i in options.moe_layers:
            experts = [_gated_mlp(backend, get, f"{m}experts.{e}.", False, hidden, options.moe_intermediate_size)
                       for e in range(options.num_experts)]
            router = expect_shape(get(m + "gate.weight"), (options.num_experts, hidden), "MoE router")
            mlp = MoE(backend, router, experts, options.num_experts_per_tok, options.norm_topk_prob)
        else:
            mlp = _gated_mlp(backend, get, m, options.mlp_bias, hidden, config.intermediate_size)
        layers.append(DecoderLayer(
            RMSNorm(backend, _norm(get, lp + "input_layernorm.weight", hidden), eps), attention,
            RMSNorm(backend, _norm(get, lp + "post_attention_layernorm.weight", hidden), eps), mlp))
    norm = RMSNorm(backend, _norm(get, p + "norm.weight", hidden), eps)
    if config.tie_word_embeddings:
        head = OutputHead(backend, tied_to=embed)
    else:
        if "lm_head.weight" not in weights:
            raise CorruptFileError(f"{weights.path}: no tensor 'lm_head.weight' and the config does not tie "
                                   "the output head to the token embedding (tie_word_embeddings)")
        head = OutputHead(backend, expect_shape(get("lm_head.weight"), (embed_table.rows, hidden), "output head"))
    if config.vocab_size and head.vocab_size < config.vocab_size:
        raise CorruptFileError(f"{weights.path}: output head has {head.vocab_size} rows, "
                               f"config vocab_size is {config.vocab_size}")
    return DecoderLM(backend, embed=embed, layers=layers, norm=norm, head=head, rotary=rotary,
                     max_position_embeddings=config.max_position_embeddings, kv_block_size=kv_block_size)


def _typed_getter(weights):
    """``weights.get`` that checks the tensor's rank: names ending in ``_proj.weight``,
    ``embed_tokens.weight``, ``lm_head.weight`` or ``mlp.gate.weight`` are matrices, the rest vectors."""
    matrices = ("_proj.weight", "embed_tokens.weight", "lm_head.weight", "mlp.gate.weight")

    def get(name: str):
        w = weights.get(name)
        want = WeightMatrix if name.endswith(matrices) else WeightVector
        if not isinstance(w, want):
            raise CorruptFileError(f"{weights.path}: tensor {name!r} should be a "
                                   f"{'matrix' if want is WeightMatrix else 'vector'}, found shape {tuple(w.shape)}")
        return w

    return get


def _columns(w, hidden: int):
    return expect_shape(w, (w.rows, hidden), f"projection from the hidden size {hidden}")


def _norm(get, name: str, size: int):
    w = get(name)
    if w.shape != (size,):
        raise CorruptFileError(f"{name}: norm weight should have shape ({size},), found {w.shape}")
    return w


def _gated_mlp(backend, get, m: str, bias: bool, hidden: int, intermediate: int) -> GatedMLP:
    def b(name):
        return get(name) if bias else None

    gate = get(m + "gate_proj.weight")
    expect_shape(gate, (intermediate or gate.rows, hidden), "MLP gate projection")
    return GatedMLP(backend, gate, get(m + "up_proj.weight"), get(m + "down_proj.weight"),
                    b(m + "gate_proj.bias"), b(m + "up_proj.bias"), b(m + "down_proj.bias"))
