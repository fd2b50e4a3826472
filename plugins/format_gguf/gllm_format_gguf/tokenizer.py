"""Tokenizers rebuilt from GGUF metadata on the ``tokenizers`` library.

A GGUF file carries its vocabulary (``tokenizer.ggml.tokens``, ``token_type``, ``scores``,
``merges``), the kind of model (``tokenizer.ggml.model``: ``gpt2`` byte-level BPE, ``llama``
SentencePiece BPE, ``bert`` WordPiece), the pre-tokenizer name (``tokenizer.ggml.pre``), special
token ids and the chat template. From these we build the same pipeline the original
``tokenizer.json`` had: pre-tokenizer regexes by ``pre`` name (the table mirrors llama.cpp's
``llama-vocab.cpp``, with the patterns as the Hugging Face files wrote them), BPE merges (for
SentencePiece vocabularies, derived from the scores as llama.cpp merges by score), byte
fallback, WordPiece with the ``##`` prefix restored, and control / user-defined tokens as added
tokens so that chat markers like ``<|im_start|>`` are matched whole.
"""

from __future__ import annotations

from typing import Any

from gllm_core.errors import CorruptFileError, UnsupportedFormatError
from gllm_core.tokenizer import HFTokenizer

from .reader import MetadataArray

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN35 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+"
          r"|\s+(?!\S)|\s+")
GPT4O = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+" + _CONTRACTIONS + "?"
         r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*" + _CONTRACTIONS + "?"
         r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
TEKKEN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
          r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
          r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_DEEPSEEK_LETTERS = (  # written with escapes: the ranges name code points that NFC would fold
    "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba"
    "\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45"
    "\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe"
    "\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102"
    "\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3"
    "\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06"
    "\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3"
    "\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
    "\U0001e900-\U0001e943]+")
_DEEPSEEK_PUNCT = "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"
_CJK_KOREAN = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
_CJK_KANA = "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"
_SENTENCE_MARKS = " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"


# Tokens that end generation, found by their text as llama.cpp does (``llama-vocab.cpp``): end of
# turn / text markers, and the fill-in-the-middle pad, repository and file separators.
END_OF_GENERATION = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>",
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",
    "<|file_sep|>",
)


class Pre:
    """How one ``tokenizer.ggml.pre`` value pre-tokenizes: regexes applied in turn (each splits the
    pieces of the one before, matches and gaps both kept), then the BPE options it implies."""

    def __init__(self, *regexes: str, ignore_merges: bool = False, add_bos: bool | None = None,
                 individual_digits: bool = False):
        self.regexes = regexes
        self.ignore_merges = ignore_merges
        self.add_bos = add_bos
        self.individual_digits = individual_digits


_STARCODER = Pre(r"\p{N}", GPT2)
_LLAMA3 = Pre(LLAMA3, ignore_merges=True, add_bos=True)
_QWEN2 = Pre(QWEN2)
_GPT2 = Pre(GPT2)
_GPT4O = Pre(GPT4O)
_BLOOM = Pre(_SENTENCE_MARKS)

PRE_TOKENIZERS: dict[str, Pre] = {
    "default": Pre(r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"),
    **{name: _LLAMA3 for name in ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                                  "midm-2.0", "lfm2", "jina-v5-nano", "dbrx", "smaug-bpe")},
    "deepseek-llm": Pre("[\r\n]", _DEEPSEEK_LETTERS, _DEEPSEEK_PUNCT, r"\s+$", _CJK_KOREAN, r"\p{N}+"),
    "deepseek-coder": Pre("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK_KOREAN, r"\p{N}"),
    "deepseek-v3": Pre(r"\p{N}{1,3}", _CJK_KANA,
                       "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
                       "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"),
    "falcon": Pre(r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"),
    **{name: _STARCODER for name in ("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone",
                                     "minerva-7b", "mellum2")},
    **{name: _GPT2 for name in ("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es",
                                "jina-v2-de", "a.x-4.0", "mellum", "modern-bert", "mpt", "olmo", "jais",
                                "trillion", "granite-docling", "exaone4", "jina-v1-en", "jina-v2-code",
                                "roberta-bpe")},
    **{name: _QWEN2 for name in ("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "stablelm2", "hunyuan",
                                 "megrez", "solar-open", "grok-2")},
    "qwen35": Pre(QWEN35),
    "chatglm-bpe": Pre(LLAMA3),
    "glm4": Pre(LLAMA3, ignore_merges=True),
    "glm5": Pre(LLAMA3, ignore_merges=True),
    "tekken": Pre(TEKKEN, ignore_merges=True, add_bos=True),
    **{name: _GPT4O for name in ("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2")},
    **{name: _BLOOM for name in ("poro-chat", "bloom", "gpt3-finnish")},
    "viking": Pre(_SENTENCE_MARKS, r"\p{N}"),
    "chameleon": Pre(r"<sentinel:[0-9]+>", r"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", r"([\t\n]|    |  )",
                     r"\p{N}", r"[\p{P}!-/:-@\[-`{-~]", GPT2, add_bos=True),
    "seed-coder": Pre(_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+"
                      r"|\s+(?!\S)|\s+"),
    "bailingmoe": Pre(r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                      r"|\s*[\r\n]|\s+(?!\S)|\s+"),
    "superbpe": Pre(r"\p{N}+", r"(?=(\d{3})+(?!\d))"),
    "minicpm5": Pre(r"\p{N}{1,3}", _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*"
                    r"|\s*[\r\n]+|\s+(?!\S)|\s+", ignore_merges=True),
}


_EOG_TEXTS = frozenset(END_OF_GENERATION)


def _ids(md, key: str, vocab: int) -> int | None:
    value = md.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab:
        return None
    return value


def _string_list(md, key: str, path: str, required: bool = True) -> list[str] | None:
    value = md.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, MetadataArray) or value.type != "string":
        raise CorruptFileError(f"{path}: {key} is missing or not an array of strings")
    return value.values


def _number_list(md, key: str, path: str, count: int):
    value = md.get(key)
    if value is None:
        return None
    if not isinstance(value, MetadataArray) or value.type == "string" or len(value) != count:
        raise CorruptFileError(f"{path}: {key} must be an array of {count} numbers")
    return value.values


class GGUFTokenizer(HFTokenizer):
    """A tokenizer rebuilt from GGUF metadata; the same interface as a tokenizer.json one."""

    def __init__(self, tok, *, ids: dict[str, int | None], stop_ids: tuple[int, ...], add_bos: bool,
                 add_eos: bool, kind: str, pre: str | None, **kwargs):
        super().__init__(tok, **kwargs)
        for role, tid in ids.items():
            setattr(self, f"{role}_token_id", tid)
            setattr(self, f"{role}_token", None if tid is None else tok.id_to_token(tid))
        self._stop_ids = stop_ids
        self.add_bos_token = add_bos
        self.add_eos_token = add_eos
        self.kind = kind
        self.pre = pre

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """End of sequence plus the end-of-turn / end-of-message tokens the file names."""
        return self._stop_ids


def build_tokenizer(md, path: str, max_length: int | None = None) -> GGUFTokenizer:
    """The tokenizer described by a GGUF file's metadata (``md``: key → value)."""
    model = md.get("tokenizer.ggml.model")
    if not isinstance(model, str):
        raise UnsupportedFormatError(f"{path}: no tokenizer.ggml.model in the metadata; the file carries no tokenizer")
    tokens = _string_list(md, "tokenizer.ggml.tokens", path)
    n = len(tokens)
    if n == 0:
        raise CorruptFileError(f"{path}: tokenizer.ggml.tokens is empty")
    types = _number_list(md, "tokenizer.ggml.token_type", path, n)
    types = [NORMAL] * n if types is None else [int(t) for t in types]
    pre_name = md.get("tokenizer.ggml.pre")
    pre_name = pre_name if isinstance(pre_name, str) else None
    if model == "gpt2":
        tok, add_bos = _byte_level_bpe(md, path, tokens, types, pre_name)
    elif model == "llama":
        tok, add_bos = _sentencepiece_bpe(md, path, tokens, types)
    elif model == "bert":
        tok, add_bos = _wordpiece(md, path, tokens, types)
    else:
        raise UnsupportedFormatError(f"{path}: tokenizer model {model!r} is not supported "
                                     f"(supported: gpt2 byte-level BPE, llama SentencePiece, bert WordPiece)")
    value = md.get("tokenizer.ggml.add_bos_token")
    if isinstance(value, bool):
        add_bos = value
    value = md.get("tokenizer.ggml.add_eos_token")
    add_eos = value if isinstance(value, bool) else False

    ids = {role: _ids(md, f"tokenizer.ggml.{key}", n) for role, key in (
        ("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "padding_token_id"),
        ("unk", "unknown_token_id"), ("cls", "cls_token_id"), ("sep", "seperator_token_id"),
        ("mask", "mask_token_id"), ("eot", "eot_token_id"), ("eom", "eom_token_id"))}
    if model == "bert":
        ids["bos"] = ids["bos"] if ids["bos"] is not None else ids["cls"]
        ids["eos"] = ids["eos"] if ids["eos"] is not None else ids["sep"]
    _post_processor(tok, model, ids, add_bos, add_eos)
    named = [i for i, (t, kind) in enumerate(zip(tokens, types)) if t in _EOG_TEXTS and kind in (CONTROL, USER_DEFINED)]
    stop = tuple(dict.fromkeys(t for t in (ids["eos"], ids["eot"], ids["eom"], *named) if t is not None))
    template = md.get("tokenizer.chat_template")
    return GGUFTokenizer(tok, ids=ids, stop_ids=stop, add_bos=add_bos, add_eos=add_eos, kind=model,
                         pre=pre_name, max_length=max_length,
                         chat_template=template if isinstance(template, str) else None, source=path)


def _vocab(tokens: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)  # a repeated string keeps its first id, as llama.cpp's text_to_token does
    return vocab


def _added_tokens(tok, tokens: list[str], types: list[int], extra_special=()) -> None:
    from tokenizers import AddedToken

    added = []
    for i, (t, kind) in enumerate(zip(tokens, types)):
        if not t:
            continue
        if kind == CONTROL or i in extra_special:
            added.append(AddedToken(t, special=True, normalized=False))
        elif kind == USER_DEFINED:
            added.append(AddedToken(t, special=False, normalized=False))
    if added:
        tok.add_special_tokens([a for a in added if a.special])
        tok.add_tokens([a for a in added if not a.special])


def _byte_level_bpe(md, path, tokens, types, pre_name):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    if pre_name is None:
        pre_name = "default"
    pre = PRE_TOKENIZERS.get(pre_name)
    if pre is None:
        raise UnsupportedFormatError(f"{path}: pre-tokenizer {pre_name!r} (tokenizer.ggml.pre) is not known; "
                                     f"known: {', '.join(sorted(PRE_TOKENIZERS))}")
    merges_raw = _string_list(md, "tokenizer.ggml.merges", path)
    merges = []
    for i, m in enumerate(merges_raw):
        pos = m.find(" ", 1)  # as llama.cpp: the separator is the first space after the first character
        if pos < 0:
            raise CorruptFileError(f"{path}: tokenizer.ggml.merges[{i}] {m!r} is not two tokens separated by a space")
        merges.append((m[:pos], m[pos + 1:]))
    try:
        bpe = models.BPE(_vocab(tokens), merges, ignore_merges=pre.ignore_merges, fuse_unk=False)
    except Exception as exc:  # tokenizers reports a merge of unknown tokens
        raise CorruptFileError(f"{path}: bad BPE merges: {exc}") from None
    tok = Tokenizer(bpe)
    steps = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    _added_tokens(tok, tokens, types)
    return tok, bool(pre.add_bos)


def sentencepiece_merges(tokens: list[str], scores, vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges equivalent to merging by score: every split of a piece into two pieces of the
    vocabulary, the pieces with the highest score first (llama.cpp's SentencePiece tokenizer
    merges the adjacent pair whose concatenation scores highest, leftmost on ties)."""
    found = []
    for piece, pid in vocab.items():
        if len(piece) < 2:
            continue
        score = float(scores[pid]) if scores is not None else -pid
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            lid, rid = vocab.get(left), vocab.get(right)
            if lid is not None and rid is not None:
                found.append((-score, pid, lid, rid, left, right))
    found.sort()
    return [(left, right) for *_, left, right in found]


def _sentencepiece_bpe(md, path, tokens, types):
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = _number_list(md, "tokenizer.ggml.scores", path, len(tokens))
    vocab = _vocab(tokens)
    # only normal tokens take part in merging; bytes are reached through byte fallback
    mergeable = {t: i for t, i in vocab.items() if types[i] in (NORMAL, USER_DEFINED, UNUSED)}
    merges = sentencepiece_merges(tokens, scores, mergeable)
    unk = _ids(md, "tokenizer.ggml.unknown_token_id", len(tokens))
    unk_token = tokens[unk] if unk is not None else None
    bpe = models.BPE(vocab, merges, unk_token=unk_token, byte_fallback=True, fuse_unk=True)
    tok = Tokenizer(bpe)
    add_space = md.get("tokenizer.ggml.add_space_prefix")
    add_space = True if not isinstance(add_space, bool) else add_space
    steps = [normalizers.Replace(" ", "\u2581")]
    if add_space:
        steps.insert(0, normalizers.Prepend("\u2581"))
    tok.normalizer = normalizers.Sequence(steps)
    dec = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_space:
        dec.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(dec)
    _added_tokens(tok, tokens, types)
    return tok, True


def _wordpiece(md, path, tokens, types):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    # llama.cpp's converter marks word starts with "▁" and drops "##"; put the "##" back
    words = [t if kind == CONTROL else (t[1:] if t.startswith("\u2581") else "##" + t)
             for t, kind in zip(tokens, types)]
    unk = _ids(md, "tokenizer.ggml.unknown_token_id", len(tokens))
    model = models.WordPiece(_vocab(words), unk_token=words[unk] if unk is not None else "[UNK]",
                             max_input_chars_per_word=100)
    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True,
                                                lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    _added_tokens(tok, words, types)
    return tok, True


def _post_processor(tok, model: str, ids: dict[str, int | None], add_bos: bool, add_eos: bool) -> None:
    from tokenizers import processors

    def name(tid):
        return tok.id_to_token(tid)

    if model == "bert":
        cls, sep = ids["cls"] if ids["cls"] is not None else ids["bos"], ids["sep"] if ids["sep"] is not None else ids["eos"]
        if cls is None or sep is None:
            return
        tok.post_processor = processors.TemplateProcessing(
            single=f"{name(cls)}:0 $A:0 {name(sep)}:0", pair=f"{name(cls)}:0 $A:0 {name(sep)}:0 $B:1 {name(sep)}:1",
            special_tokens=[(name(cls), cls), (name(sep), sep)])
        return
    bos = ids["bos"] if add_bos else None
    eos = ids["eos"] if add_eos else None
    if bos is None and eos is None:
        return
    head = f"{name(bos)}:0 " if bos is not None else ""
    tail = f" {name(eos)}:0" if eos is not None else ""
    special = [(name(t), t) for t in (bos, eos) if t is not None]
    special = list(dict(special).items())
    tok.post_processor = processors.TemplateProcessing(
        single=f"{head}$A:0{tail}", pair=f"{head}$A:0{tail} {head.replace(':0', ':1')}$B:1{tail.replace(':0', ':1')}",
        special_tokens=special)


def load_gguf_tokenizer(path: str, config: Any = None) -> GGUFTokenizer:
    from .source import open_gguf

    max_length = getattr(config, "max_position_embeddings", 0) or None
    return build_tokenizer(open_gguf(path).metadata, path, max_length=max_length)
