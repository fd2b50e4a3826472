"""Tokenizers rebuilt from GGUF metadata: llama.cpp's test vectors, special tokens, chat templates."""

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from gllm_core.errors import CorruptFileError, UnsupportedFormatError
from gllm_format_gguf.reader import GGUFFile
from gllm_format_gguf.tokenizer import build_tokenizer

TINY = Path(__file__).parent / "fixtures" / "tiny"
SEPARATOR = "\n__ggml_vocab_test__\n"
# the vocabularies the issue names, plus two more of llama.cpp's set that use known pre-tokenizers
VOCABS = ["qwen2", "qwen35", "llama-bpe", "llama-spm", "phi-3", "deepseek-llm", "deepseek-coder", "gpt-2",
          "bert-bge", "starcoder", "falcon", "mpt", "refact"]
BYTE_LEVEL = {"qwen2", "qwen35", "llama-bpe", "deepseek-llm", "deepseek-coder", "gpt-2", "starcoder", "falcon",
              "mpt", "refact"}


def _cases(vocab_dir: Path, name: str):
    """(text, expected ids) pairs, read as llama.cpp's test-tokenizer-0 reads them."""
    base = vocab_dir / f"ggml-vocab-{name}.gguf"
    texts = base.with_name(base.name + ".inp").read_bytes().decode("utf-8").split(SEPARATOR)
    lines = base.with_name(base.name + ".out").read_text(encoding="utf-8").split("\n")
    assert len(lines) >= len(texts)
    return [(text, [int(x) for x in line.split()]) for text, line in zip(texts, lines)]


@pytest.fixture(scope="module")
def tokenizers(vocab_dir):
    cache = {}

    def get(name):
        if name not in cache:
            path = vocab_dir / f"ggml-vocab-{name}.gguf"
            cache[name] = build_tokenizer(GGUFFile(path).metadata, str(path))
        return cache[name]
    return get


@pytest.mark.parametrize("name", VOCABS)
def test_llama_cpp_vectors(vocab_dir, tokenizers, name):
    tok = tokenizers(name)
    cases = _cases(vocab_dir, name)
    assert len(cases) >= 40
    failures = []
    for text, expected in cases:
        got = tok.encode_batch([text], add_special_tokens=False, max_length=0)[0][0]
        if got != expected:
            failures.append((text, expected, got))
    assert not failures, f"{len(failures)} of {len(cases)} differ, first: {failures[0]}"


@pytest.mark.parametrize("name", sorted(BYTE_LEVEL))
def test_byte_level_round_trip(vocab_dir, tokenizers, name):
    tok = tokenizers(name)
    for text, expected in _cases(vocab_dir, name):
        assert tok.decode(expected, skip_special_tokens=False) == text


def test_sentencepiece_decodes_and_adds_bos(vocab_dir, tokenizers):
    tok = tokenizers("llama-spm")
    assert tok.add_bos_token and tok.bos_token_id == 1 and tok.eos_token_id == 2
    ids = tok.encode("Hello world")
    assert ids[0] == 1 and ids[1:] == tok.encode("Hello world", add_special_tokens=False)
    assert tok.decode(ids) == "Hello world"
    assert tok.decode(tok.encode(" Hello  world\n\tx", add_special_tokens=False)) == " Hello  world\n\tx"


def test_wordpiece_adds_cls_and_sep(tokenizers):
    tok = tokenizers("bert-bge")
    ids = tok.encode("Hello World!")
    assert ids[0] == 101 and ids[-1] == 102
    assert tok.decode(ids) == "hello world!"
    (a, types), = tok.encode_pairs([("query", "a document")])
    assert a.count(102) == 2 and types[-1] == 1 and types[0] == 0


def test_llama3_adds_bos(tokenizers):
    tok = tokenizers("llama-bpe")
    assert tok.add_bos_token and tok.encode("hi")[0] == 128000


def test_tiny_fixture_tokenizer_matches_its_tokenizer_json():
    # the converter turned tokenizer.json into GGUF metadata; rebuilt, it must tokenize the same
    reference = Tokenizer.from_file(str(TINY / "tokenizer.json"))
    path = TINY / "qwen2.gguf"
    tok = build_tokenizer(GGUFFile(path).metadata, str(path))
    texts = ["The quick brown fox", "def add(a, b):\n    return a + b", "ünïcödé 你好 🙂 ?!", "  spaces  ",
             "<|im_start|>user\nhi<|im_end|>\n", "1234567 Paris"]
    for text in texts:
        assert tok.encode(text, add_special_tokens=False) == reference.encode(text, add_special_tokens=False).ids
        assert tok.decode(tok.encode(text), skip_special_tokens=False) == text
    assert tok.chat_template.startswith("{% for message in messages %}")
    assert tok.eos_token_id == reference.token_to_id("<|im_end|>")


def test_real_smollm2_tokenizer(smollm2_path):
    tok = build_tokenizer(GGUFFile(smollm2_path).metadata, smollm2_path)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.add_bos_token) == (1, 2, 2, False)
    assert tok.pre == "smollm" and tok.vocab_size == 49152
    ids = tok.encode("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n")
    assert ids[0] == 1 and ids[-2] == 2  # the chat markers are single control tokens
    assert tok.decode(ids) == "user\nWhat is the capital of France?\n"
    assert 2 in tok.stop_token_ids and 0 in tok.stop_token_ids  # <|im_end|>, <|endoftext|>
    assert "<|im_start|>" in tok.chat_template


def test_real_qwen_tokenizer(qwen_path):
    tok = build_tokenizer(GGUFFile(qwen_path).metadata, qwen_path)
    assert (tok.eos_token_id, tok.pad_token_id, tok.add_bos_token) == (151645, 151643, False)
    assert tok.encode("<|im_start|>system\n")[0] == 151644
    assert tok.encode("<tool_call>")[0] == 151657  # user-defined tokens are matched whole too
    assert {151645, 151643} <= set(tok.stop_token_ids)
    assert "tools" in tok.chat_template
    text = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
    assert tok.decode(tok.encode(text)) == text


def test_missing_or_unknown_tokenizer_metadata(tmp_path, vocab_dir):
    md = dict(GGUFFile(vocab_dir / "ggml-vocab-gpt-2.gguf").metadata)
    with pytest.raises(UnsupportedFormatError, match="pre-tokenizer"):
        build_tokenizer({**md, "tokenizer.ggml.pre": "martian"}, "x.gguf")
    with pytest.raises(UnsupportedFormatError, match="tokenizer model"):
        build_tokenizer({**md, "tokenizer.ggml.model": "rwkv"}, "x.gguf")
    with pytest.raises(CorruptFileError, match="merges"):
        build_tokenizer({k: v for k, v in md.items() if k != "tokenizer.ggml.merges"}, "x.gguf")
    with pytest.raises(UnsupportedFormatError, match="no tokenizer"):
        build_tokenizer({"general.architecture": "llama"}, "x.gguf")
