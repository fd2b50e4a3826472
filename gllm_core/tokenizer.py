"""Tokenizers: the ``Tokenizer`` interface and the built-in tokenizer.json loader.

gllm decides padding and truncation itself: the file's own padding and truncation settings
(MiniLM's tokenizer.json pads to 128) are switched off, and sequences are cut at the model's
maximum length (sentence_bert_config.json, else tokenizer_config.json, else the config).
"""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Sequence

from .errors import CorruptFileError
from .hookspecs import hookimpl
from .registry import TokenizerLoader

_UNSET_MAX = 1_000_000  # transformers writes 1e30 for "no limit"


def _gpt2_byte_table() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte (byte-level BPE vocabularies use them)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


_GPT2_BYTE_OF = _gpt2_byte_table()


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{path}: cannot read JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CorruptFileError(f"{path}: expected a JSON object")
    return data


def model_max_length(folder: str, config=None) -> int | None:
    """The longest input the model was trained for, from the files that say so, in their order."""
    st = os.path.join(folder, "sentence_bert_config.json")
    if os.path.isfile(st):
        value = _read_json(st).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    tc = os.path.join(folder, "tokenizer_config.json")
    if os.path.isfile(tc):
        value = _read_json(tc).get("model_max_length")
        if isinstance(value, (int, float)) and 0 < value < _UNSET_MAX:
            return int(value)
    if config is not None and getattr(config, "max_position_embeddings", 0):
        return int(config.max_position_embeddings)
    return None


class Tokenizer:
    """Text ↔ token ids. Subclasses for other sources implement the same methods."""

    max_length: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    chat_template: str | None = None

    def encode_batch(self, texts: Sequence[str], *, max_length: int | None = None,
                     add_special_tokens: bool = True) -> list[tuple[list[int], list[int]]]:
        """Each text → (ids, type_ids), cut to max_length (default: the model's; 0: never cut)."""
        raise NotImplementedError

    def encode_pairs(self, pairs: Sequence[tuple[str, str]], *, max_length: int | None = None
                     ) -> list[tuple[list[int], list[int]]]:
        """(query, document) pairs, truncating the document side only."""
        raise NotImplementedError

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str, **kwargs) -> list[int]:
        return self.encode_batch([text], **kwargs)[0][0]

    def encode_prompt(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """A generation prompt → ids, never cut (the engine checks it against the context length)."""
        return self.encode_batch([text], max_length=0, add_special_tokens=add_special_tokens)[0][0]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (maybe part of a UTF-8 character), for logprobs."""
        return self.decode([token_id], skip_special_tokens=False).encode("utf-8")

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """Token ids that end a generated answer (end of sequence, end of turn)."""
        return () if self.eos_token_id is None else (self.eos_token_id,)


class HFTokenizer(Tokenizer):
    """A tokenizer.json read with the ``tokenizers`` library."""

    def __init__(self, tok, *, max_length=None, special: dict | None = None, chat_template=None, source=""):
        self._tok = tok
        self._lock = threading.Lock()  # truncation is set per call on the shared object
        self._tok.no_padding()
        self._tok.no_truncation()
        self.max_length = max_length
        self.source = source
        self.chat_template = chat_template
        self._decoder_kinds: frozenset[str] | None = None  # read on first token_bytes()
        self._added_ids: frozenset[int] = frozenset()
        special = special or {}
        for role in ("bos", "eos", "pad", "unk", "cls", "sep"):
            token = special.get(f"{role}_token")
            if isinstance(token, dict):
                token = token.get("content")
            tid = self._tok.token_to_id(token) if isinstance(token, str) else None
            setattr(self, f"{role}_token", token if tid is not None else None)
            setattr(self, f"{role}_token_id", tid)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def _run(self, inputs, max_length, strategy, add_special_tokens=True):
        limit = max_length if max_length is not None else self.max_length
        with self._lock:
            if limit:
                self._tok.enable_truncation(limit, strategy=strategy)
            else:
                self._tok.no_truncation()
            try:
                encodings = self._tok.encode_batch(list(inputs), add_special_tokens=add_special_tokens)
            except Exception as exc:  # tokenizers raises its own exception types
                from .errors import BadRequestError
                raise BadRequestError(f"cannot tokenize input: {exc}") from None
            finally:
                self._tok.no_truncation()
        return [(list(e.ids), list(e.type_ids)) for e in encodings]

    def encode_batch(self, texts, *, max_length=None, add_special_tokens=True):
        return self._run(texts, max_length, "longest_first", add_special_tokens)

    def encode_pairs(self, pairs, *, max_length=None):
        return self._run([tuple(p) for p in pairs], max_length, "only_second")

    def decode(self, ids, skip_special_tokens=True):
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(int(token_id))

    def token_bytes(self, token_id: int) -> bytes:
        piece = self._tok.id_to_token(int(token_id))
        if piece is None:
            return b""
        if self._decoder_kinds is None:
            self._added_ids = frozenset(self._tok.get_added_tokens_decoder())
            state = self._tok.decoder.__getstate__() if self._tok.decoder is not None else b"{}"
            self._decoder_kinds = frozenset(re.findall(r'"type":\s*"(\w+)"', state.decode("utf-8")))
        kinds = self._decoder_kinds
        if int(token_id) in self._added_ids:
            return piece.encode("utf-8")
        if "ByteLevel" in kinds:  # GPT-2 byte-to-character table; tokenizers keeps a token that is not in it
            raw = [_GPT2_BYTE_OF.get(c) for c in piece]
            return piece.encode("utf-8") if None in raw else bytes(raw)
        if "ByteFallback" in kinds and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):
            return bytes([int(piece[3:5], 16)])
        if "Metaspace" in kinds or "Replace" in kinds:
            return piece.replace("\u2581", " ").encode("utf-8")
        return self._tok.decode([int(token_id)], skip_special_tokens=False).encode("utf-8")


def _sniff_tokenizer_json(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "tokenizer.json"))


def load_tokenizer_json(path: str, config=None) -> HFTokenizer:
    from tokenizers import Tokenizer as RawTokenizer

    file = os.path.join(path, "tokenizer.json")
    try:
        raw = RawTokenizer.from_file(file)
    except Exception as exc:
        raise CorruptFileError(f"{file}: cannot load tokenizer: {exc}") from None
    special: dict = {}
    chat_template = None
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        extra = os.path.join(path, name)
        if os.path.isfile(extra):
            data = _read_json(extra)
            special.update({k: v for k, v in data.items() if k.endswith("_token") and v})
            if name == "tokenizer_config.json":
                chat_template = data.get("chat_template")
    template_file = os.path.join(path, "chat_template.jinja")
    if chat_template is None and os.path.isfile(template_file):
        with open(template_file, encoding="utf-8") as f:
            chat_template = f.read()
    return HFTokenizer(raw, max_length=model_max_length(path, config), special=special,
                       chat_template=chat_template, source=file)


@hookimpl
def register_tokenizers(register):
    register(TokenizerLoader(name="tokenizer.json", sniff=_sniff_tokenizer_json, load=load_tokenizer_json,
                             priority=100))
