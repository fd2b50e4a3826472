"""Write a model gllm can load (safetensors folder or GGUF) as a GGUF file of one storage type.

``gllm quantize IN OUT --type q4_k`` is this module: the inverse of the reader's tables.
Hugging Face tensor names go back to GGUF names (per-expert matrices stacked into
``ffn_*_exps``), the Q/K rows of ``llama``-family models are permuted the way llama.cpp's
converter does, the config goes back to ``{arch}.*`` keys, and the tokenizer goes in as
``tokenizer.*`` metadata (copied from a GGUF input; converted from a byte-level BPE
``tokenizer.json``). Matrices are quantized with ``gllm_format_gguf.quants`` (a ``q4_k`` row that
is not whole 256-blocks is stored ``q5_0``, as llama.cpp does); vectors stay float32. gguf-py's
``GGUFWriter`` lays the file out; it is written to a temporary name and moved into place.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from typing import Any, Callable

import numpy as np

from gllm_core.errors import BadRequestError, UnsupportedArchitectureError, UnsupportedFormatError
from gllm_core.weights import WeightMatrix, WeightVector

from .families import COMMON_BLOCK, COMMON_CONFIG, COMMON_GLOBAL, FAMILIES, Family
from .quantize import FALLBACK, KEEP_FLOAT
from .quants import GGML_TYPES_BY_NAME, quantize
from .reader import MetadataArray
from .tokenizer import CONTROL, NORMAL, PRE_TOKENIZERS, UNUSED, USER_DEFINED

WRITE_TYPES = ("f32", "f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k")
# llama_ftype of a file whose matrices are mostly of one type
FILE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q4_k": 15}
ARRAY = 9
_VALUE_TYPES = {"uint8": 0, "int8": 1, "uint16": 2, "int16": 3, "uint32": 4, "int32": 5, "float32": 6, "bool": 7,
                "string": 8, "uint64": 10, "int64": 11, "float64": 12}


def family_of(config) -> Family:
    arch = config.raw.get("general.architecture")
    if isinstance(arch, str) and config.raw.get("gguf_family") in FAMILIES:
        return FAMILIES[config.raw["gguf_family"]]
    for family in FAMILIES.values():
        if family.hf_architecture in config.architectures:
            return family
    for family in FAMILIES.values():
        if family.model_type == config.model_type:
            return family
    wanted = ", ".join(config.architectures) or config.model_type or "unknown"
    raise UnsupportedArchitectureError(f"cannot write {wanted} as GGUF: no GGUF family maps it "
                                       f"(known: {', '.join(f.hf_architecture for f in FAMILIES.values())})")


# -- names ---------------------------------------------------------------------------------------------

def _name_rules(family: Family) -> list[tuple[re.Pattern, str, bool]]:
    """(HF name pattern, GGUF base, is_expert) for the block tensors of a family."""
    table = {**COMMON_BLOCK, **family.block}
    rules = []
    for gguf_base, hf in table.items():
        pattern = re.escape(hf).replace(re.escape("{e}"), r"(\d+)")
        rules.append((re.compile(rf"^model\.layers\.(\d+)\.{pattern}(\.weight|\.bias|)$"), gguf_base, "{e}" in hf))
    # longer HF names first, so "mlp.gate_proj" never shadows "mlp.gate"
    return sorted(rules, key=lambda r: -len(r[0].pattern))


def gguf_name(rules, name: str) -> tuple[str, int | None, int | None]:
    """(GGUF name, layer, expert) of a Hugging Face tensor name."""
    for base, hf in COMMON_GLOBAL.items():
        for kind in ("weight", "bias"):
            if name == f"{hf}.{kind}":
                return f"{base}.{kind}", None, None
    for pattern, base, expert in rules:
        m = pattern.match(name)
        if m:
            layer = int(m.group(1))
            suffix = m.groups()[-1] or ".bias"  # e_score_correction_bias has no suffix
            return f"blk.{layer}.{base}{suffix}", layer, int(m.group(2)) if expert else None
    return name, None, None  # tensors the reader left under their GGUF name


def permute_rows(data: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute: HF rotate-half rows → interleaved pairs, per head."""
    rows = data.shape[0]
    return data.reshape((n_head, 2, rows // n_head // 2) + data.shape[1:]).swapaxes(1, 2).reshape(data.shape)


# -- metadata ------------------------------------------------------------------------------------------

def _config_value(config, field):
    value = getattr(config, field, None) if field in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                        "num_attention_heads", "num_key_value_heads",
                                                        "intermediate_size", "max_position_embeddings",
                                                        "rms_norm_eps", "rope_theta", "head_dim") else None
    if value in (None, 0):
        value = config.raw.get(field)
    return value


def model_metadata(family: Family, config) -> list[tuple[str, Any, int]]:
    """(key, value, GGUF value type) of the ``{arch}.*`` keys for a config."""
    arch = family.gguf_arch.split("+")[0]
    out = []
    uses_layer_norm = "layer_norm_eps" in config.raw and "rms_norm_eps" not in config.raw
    for field, key in {**COMMON_CONFIG, **family.config}.items():
        if field == "layer_norm_eps" and not uses_layer_norm or field == "rms_norm_eps" and uses_layer_norm:
            continue
        value = _config_value(config, field)
        if value is None or isinstance(value, (list, dict)):
            continue
        if isinstance(value, bool):
            out.append((f"{arch}.{key}", value, _VALUE_TYPES["bool"]))
        elif isinstance(value, int):
            out.append((f"{arch}.{key}", value, _VALUE_TYPES["uint32"]))
        elif isinstance(value, float):
            out.append((f"{arch}.{key}", value, _VALUE_TYPES["float32"]))
    head_dim = config.head_dim or config.hidden_size // max(config.num_attention_heads, 1)
    out.append((f"{arch}.attention.value_length", int(head_dim), _VALUE_TYPES["uint32"]))
    rotary = int(head_dim * float(config.raw.get("partial_rotary_factor", 1.0) or 1.0))
    out.append((f"{arch}.rope.dimension_count", rotary, _VALUE_TYPES["uint32"]))
    out.append((f"{arch}.vocab_size", int(config.vocab_size), _VALUE_TYPES["uint32"]))
    from gllm_core.rope import rope_parameters  # both config layouts: rope_theta or rope_parameters

    rope = rope_parameters(config)
    out.append((f"{arch}.rope.freq_base", float(rope["rope_theta"]), _VALUE_TYPES["float32"]))
    kind = rope["rope_type"]
    if kind in ("linear", "yarn"):
        out.append((f"{arch}.rope.scaling.type", kind, _VALUE_TYPES["string"]))
        out.append((f"{arch}.rope.scaling.factor", float(rope["factor"]), _VALUE_TYPES["float32"]))
        if rope.get("original_max_position_embeddings"):
            out.append((f"{arch}.rope.scaling.original_context_length",
                        int(rope["original_max_position_embeddings"]), _VALUE_TYPES["uint32"]))
    elif kind != "default":
        raise UnsupportedFormatError(f"cannot write rope type {kind!r} to GGUF yet (default, linear, yarn)")
    return list({k: (k, v, t) for k, v, t in out}.values())  # a later entry for a key wins


def _copy_tokenizer(md, value_types: dict[str, str]) -> list[tuple[str, Any, int, int | None]]:
    """The ``tokenizer.*`` keys of a GGUF input, with their stored types."""
    out = []
    for key, value in md.items():
        if not key.startswith("tokenizer."):
            continue
        if isinstance(value, MetadataArray):
            out.append((key, value.tolist(), ARRAY, _VALUE_TYPES.get(value.type)))
        else:
            out.append((key, value, _VALUE_TYPES[value_types[key]], None))
    return out


def _pre_name(pre_tokenizer: dict) -> str:
    """The ``tokenizer.ggml.pre`` name of a tokenizer.json pre-tokenizer (byte-level BPE)."""
    if pre_tokenizer.get("type") == "ByteLevel" and pre_tokenizer.get("use_regex", True):
        return "gpt-2"
    steps = pre_tokenizer.get("pretokenizers", []) if pre_tokenizer.get("type") == "Sequence" else []
    regexes = tuple(s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split")
    if steps and steps[-1].get("type") == "ByteLevel" and all(regexes):
        for name in ("qwen2", "llama-bpe", "qwen35", "gpt-4o", "tekken", "deepseek-v3", "gpt-2", "starcoder",
                     "deepseek-llm", "deepseek-coder", "falcon", "default"):
            if PRE_TOKENIZERS[name].regexes == regexes:
                return name
    raise UnsupportedFormatError(f"cannot name this tokenizer's pre-tokenizer for GGUF: {json.dumps(pre_tokenizer)[:200]}")


def _convert_tokenizer(folder: str, config, vocab_size: int) -> list[tuple[str, Any, int, int | None]]:
    """tokenizer.json (byte-level BPE) + tokenizer_config.json → ``tokenizer.*`` keys."""
    path = os.path.join(folder, "tokenizer.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise UnsupportedFormatError(f"{folder}: no readable tokenizer.json to put in the GGUF ({exc})") from None
    model = data.get("model", {})
    if model.get("type") != "BPE" or data.get("decoder", {}).get("type") != "ByteLevel":
        raise UnsupportedFormatError(f"{path}: only byte-level BPE tokenizers can be written to GGUF so far")
    tokens: list[str | None] = [None] * vocab_size
    types = [UNUSED] * vocab_size
    for token, tid in model["vocab"].items():
        if tid < vocab_size:
            tokens[tid], types[tid] = token, NORMAL
    for added in data.get("added_tokens", []):
        tid = added["id"]
        if tid < vocab_size:
            tokens[tid] = added["content"]
            types[tid] = CONTROL if added.get("special") else USER_DEFINED
    tokens = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    u32, string = _VALUE_TYPES["uint32"], _VALUE_TYPES["string"]
    out = [("tokenizer.ggml.model", "gpt2", string, None),
           ("tokenizer.ggml.pre", _pre_name(data.get("pre_tokenizer") or {}), string, None),
           ("tokenizer.ggml.tokens", tokens, ARRAY, string),
           ("tokenizer.ggml.token_type", types, ARRAY, _VALUE_TYPES["int32"]),
           ("tokenizer.ggml.merges", merges, ARRAY, string)]
    extra = {}
    config_file = os.path.join(folder, "tokenizer_config.json")
    if os.path.isfile(config_file):
        with open(config_file, encoding="utf-8") as f:
            extra = json.load(f)
    ids = {t: i for i, t in enumerate(tokens)}
    for role, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "padding_token_id"),
                      ("unk", "unknown_token_id")):
        token = extra.get(f"{role}_token")
        token = token.get("content") if isinstance(token, dict) else token
        tid = ids.get(token) if isinstance(token, str) else getattr(config, f"{role}_token_id", None)
        if isinstance(tid, int) and 0 <= tid < vocab_size:
            out.append((f"tokenizer.ggml.{key}", tid, u32, None))
    if isinstance(extra.get("add_bos_token"), bool):
        out.append(("tokenizer.ggml.add_bos_token", extra["add_bos_token"], _VALUE_TYPES["bool"], None))
    if isinstance(extra.get("chat_template"), str):
        out.append(("tokenizer.chat_template", extra["chat_template"], string, None))
    return out


# -- tensors -------------------------------------------------------------------------------------------

def _storage(name: str, w, qtype: str) -> tuple[np.ndarray, str]:
    """(data, GGML type name) for one tensor: float32 values in, stored bytes or floats out."""
    values = w.to_float32()
    if values.ndim == 1 or qtype == "f32":
        return np.ascontiguousarray(values, dtype=np.float32), "f32"
    if qtype == "f16":
        return values.astype(np.float16), "f16"
    target = None
    if not KEEP_FLOAT.search(name):
        for candidate in (qtype, FALLBACK.get(qtype), "q8_0"):
            if candidate and values.shape[-1] % GGML_TYPES_BY_NAME[candidate].block_size == 0:
                target = candidate
                break
    if target is None:
        return np.ascontiguousarray(values, dtype=np.float32), "f32"
    return quantize(values, target), target


def write_gguf(weights, config, folder: str, out_path: str, qtype: str,
               progress: Callable[[str], None] | None = None) -> dict[str, int]:
    """Write ``weights`` (a WeightSource) and ``config`` as a GGUF file at ``out_path``; returns how
    many tensors went into each storage type."""
    import gguf

    if qtype not in WRITE_TYPES:
        raise BadRequestError(f"--type {qtype!r} is not supported; choose one of {', '.join(WRITE_TYPES)}")
    family = family_of(config)
    arch = family.gguf_arch.split("+")[0]
    md = getattr(weights, "metadata", {}) or {}
    if "tokenizer.ggml.model" in md:
        tokenizer = _copy_tokenizer(md, getattr(getattr(weights, "file", None), "value_types", {}))
    else:
        tokenizer = _convert_tokenizer(folder, config, config.vocab_size)

    rules = _name_rules(family)
    permuted = family.permuted_qk
    grouped: dict[str, list] = {}
    order: list[str] = []
    for name in weights.names():
        gname, layer, expert = gguf_name(rules, name)
        if gname not in grouped:
            grouped[gname] = []
            order.append(gname)
        grouped[gname].append((expert, name))

    tmp = f"{out_path}.{secrets.token_hex(4)}.tmp"
    writer = gguf.GGUFWriter(tmp, arch)
    counts: dict[str, int] = {}
    try:
        writer.add_name(str(config.raw.get("general.name") or os.path.basename(os.path.normpath(folder))))
        writer.add_file_type(FILE_TYPES[qtype])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, value, vtype in model_metadata(family, config):
            writer.add_key_value(key, value, gguf.GGUFValueType(vtype))
        for key, value, vtype, subtype in tokenizer:
            if vtype == ARRAY:
                writer.add_key_value(key, value, gguf.GGUFValueType.ARRAY,
                                     sub_type=gguf.GGUFValueType(subtype) if subtype is not None else None)
            else:
                writer.add_key_value(key, value, gguf.GGUFValueType(vtype))
        for gname in order:
            parts = sorted(grouped[gname], key=lambda p: -1 if p[0] is None else p[0])
            mats = []
            for expert, name in parts:
                w = weights.get(name)
                values = w
                m = re.match(r"^blk\.\d+\.attn_([qk])\.(weight|bias)$", gname)
                if permuted and m:
                    heads = config.num_attention_heads if m.group(1) == "q" else config.num_key_value_heads
                    dense = permute_rows(w.to_float32(), heads)
                    values = (WeightMatrix(w.name, dense, "f32", dense.shape) if dense.ndim == 2
                              else WeightVector(w.name, dense, "f32"))
                mats.append(_storage(name, values, qtype))
            kinds = {k for _, k in mats}
            if len(kinds) != 1:
                raise UnsupportedFormatError(f"{gname}: experts came out in different types {sorted(kinds)}")
            kind = kinds.pop()
            data = np.stack([d for d, _ in mats]) if len(mats) > 1 else mats[0][0]
            raw_dtype = gguf.GGMLQuantizationType[kind.upper()]
            writer.add_tensor(gname, data, raw_dtype=raw_dtype)
            counts[kind] = counts.get(kind, 0) + 1
            if progress:
                progress(f"{gname} {kind} {list(data.shape)}")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_path)
    except BaseException:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return counts
