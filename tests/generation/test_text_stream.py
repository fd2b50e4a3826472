"""Incremental detokenization and stop strings, against whole-text references."""

from __future__ import annotations

import numpy as np
import pytest
from gllm_toy_lm import ToyLM

from gllm_core.detokenizer import IncrementalDetokenizer, StopStrings
from gllm_core.generation import Engine
from gllm_core.sampling import SamplingParams

TEXT = "hello world: 中文 é, éx and 😀 emoji, ü, ñ done"


def test_pieces_add_up_to_the_whole_decode_for_any_tokens(tokenizer):
    rng = np.random.default_rng(0)
    for _ in range(300):  # random ids: invalid byte runs, specials, prompts that end inside a character
        ids = rng.integers(0, tokenizer.vocab_size, size=int(rng.integers(1, 30))).tolist()
        prompt = rng.integers(0, 256, size=int(rng.integers(1, 8))).tolist()
        detok = IncrementalDetokenizer(tokenizer, prompt)
        pieces = [detok.add(t) for t in ids]
        tail = detok.flush()
        assert "".join(pieces) + tail == tokenizer.decode(ids), (prompt, ids)
        assert not any(p.endswith("\ufffd") for p in pieces)


def test_pieces_of_valid_text_never_split_a_character(tokenizer):
    rng = np.random.default_rng(1)
    alphabet = list("ab lo wé中文😀üñx\n")
    for _ in range(200):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(2, 25))))
        ids = tokenizer.encode_prompt(text, add_special_tokens=False)
        cut = int(rng.integers(1, len(ids))) if len(ids) > 1 else 1
        detok = IncrementalDetokenizer(tokenizer, ids[:cut])
        pieces = [detok.add(t) for t in ids[cut:]]
        assert "".join(pieces) + detok.flush() == tokenizer.decode(ids[cut:])
        if not tokenizer.decode(ids[:cut]).endswith("\ufffd"):  # the answer starts on a whole character
            assert "".join(pieces) == text[len(tokenizer.decode(ids[:cut])):]
            assert all("\ufffd" not in p for p in pieces), (text, cut)


def test_multibyte_characters_split_across_tokens_stream_whole(tokenizer):
    ids = tokenizer.encode_prompt(TEXT, add_special_tokens=False)
    assert any(tokenizer.decode([t]).count("\ufffd") for t in ids)  # the tokenizer does split characters
    detok = IncrementalDetokenizer(tokenizer, tokenizer.encode_prompt("say:", add_special_tokens=False))
    pieces = [detok.add(t) for t in ids]
    assert detok.flush() == ""
    assert "".join(pieces) == TEXT
    assert all("\ufffd" not in p for p in pieces)
    assert pieces.count("") >= 4  # tokens that ended inside a character waited for the rest


def stop_reference(text: str, stops) -> tuple[str, bool]:
    cuts = [text.find(s) for s in stops if s in text]
    return (text[:min(cuts)], True) if cuts else (text, False)


def test_stop_strings_cut_exactly_whatever_the_pieces():
    rng = np.random.default_rng(1)
    alphabet = "abcSTOP \n"
    for _ in range(500):
        text = "".join(rng.choice(list(alphabet), size=int(rng.integers(0, 40))))
        stops = ["STOP", "\n\n", "cab", "b"][: int(rng.integers(1, 5))]
        cuts = sorted(rng.choice(len(text) + 1, size=min(len(text), 6), replace=False)) if text else []
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        matcher = StopStrings(stops)
        out = []
        for p in pieces:
            out.append(matcher.feed(p))
            emitted = "".join(out)
            assert not any(s in emitted for s in stops)
        out.append(matcher.flush())
        expected, stopped = stop_reference(text, stops)
        assert "".join(out) == expected and matcher.stopped == stopped, (text, stops, pieces)


def scripted_engine(tokenizer, continuation: str, prompt: str = "Q:", **kw):
    prompt_ids = tokenizer.encode_prompt(prompt, add_special_tokens=False)
    script = prompt_ids + tokenizer.encode_prompt(continuation, add_special_tokens=False)
    eos = tokenizer.eos_token_id
    model = ToyLM(tokenizer.vocab_size, script=script, eos_id=eos, **kw)
    return Engine(model, tokenizer, stop_token_ids=[eos]), prompt_ids, model


def collect(engine, prompt_ids, **params):
    request = engine.add_request(prompt_ids, SamplingParams(temperature=0, **params))
    outs = list(engine.stream(request))
    return [o.text for o in outs], outs


@pytest.mark.parametrize("stop, expected", [
    (["STOP"], "hello world. "),
    (["wor"], "hello "),  # inside a merged token: cut mid-token
    (["o w", "xyz"], "hell"),
    (["中"], "I said: "),
    (["\ufffd"], None),  # a stop string that never appears
    (["STAR", "STOP"], "hello world. "),
])
def test_engine_stop_strings_spanning_tokens(tokenizer, stop, expected):
    text = "hello world. STOP I said: 中文"
    if stop == ["中"]:
        text = "I said: 中文 more"
    engine, prompt_ids, model = scripted_engine(tokenizer, text)
    pieces, outs = collect(engine, prompt_ids, stop=stop, max_tokens=60)
    final = "".join(pieces)
    if expected is None:
        assert final == text and outs[-1].finish_reason == "stop"  # ended by end-of-sequence
    else:
        assert final == expected and outs[-1].finish_reason == "stop"
    for i in range(len(pieces)):  # nothing of the stop string ever leaked out before the cut
        assert not any(s in "".join(pieces[: i + 1]) for s in stop)
    assert not model.live


def test_engine_streams_utf8_whole_and_adds_up(tokenizer):
    engine, prompt_ids, _ = scripted_engine(tokenizer, TEXT)
    pieces, outs = collect(engine, prompt_ids, max_tokens=200)
    assert "".join(pieces) == TEXT and all("\ufffd" not in p for p in pieces)
    assert outs[-1].finish_reason == "stop"
    assert sum(len(o.token_ids) for o in outs) == len(tokenizer.encode_prompt(TEXT, add_special_tokens=False)) + 1


def test_length_finish_flushes_a_dangling_partial_character(tokenizer):
    engine, prompt_ids, _ = scripted_engine(tokenizer, "ab中")
    ids = tokenizer.encode_prompt("ab中", add_special_tokens=False)
    pieces, outs = collect(engine, prompt_ids, max_tokens=len(ids) - 1)  # stops inside 中
    assert outs[-1].finish_reason == "length"
    assert "".join(pieces) == tokenizer.decode(ids[:-1]) == "ab\ufffd"


def test_logprob_entries_follow_the_text_and_stop_at_the_cut(tokenizer):
    text = "hello world. STOP I said"
    engine, prompt_ids, _ = scripted_engine(tokenizer, text)
    _, outs = collect(engine, prompt_ids, stop=["STOP"], max_tokens=60, logprobs=2)
    entries = [e for o in outs for e in o.logprobs]
    got = b"".join(tokenizer.token_bytes(e.token_id) for e in entries).decode()
    assert got == "hello world. "  # the tokens of "STOP" and after are not part of the answer
    offsets = [e.text_offset for e in entries]
    assert offsets == sorted(offsets) and offsets[0] == 0
    streamed = [e for o in outs[:-1] for e in o.logprobs]
    assert all(e.text_offset < len("".join(o.text for o in outs[:-1])) for e in streamed)


@pytest.mark.parametrize("vocab", ["llama-spm", "llama-bpe", "qwen2", "phi-3"])
def test_real_tokenizers_stream_the_answer_with_its_leading_space(vocab_dir, vocab):
    from gllm_core.plugins import get_registry

    tok = get_registry().tokenizers["gguf"].load(str(vocab_dir / f"ggml-vocab-{vocab}.gguf"), None)
    question, answer = "Question: what is it?", " Hello world, héllo 中文 😀 ok.\n  Indented line"
    prompt = tok.encode_prompt(question, add_special_tokens=True)
    ids = tok.encode_prompt(question + answer, add_special_tokens=True)
    assert ids[:len(prompt)] == prompt
    detok = IncrementalDetokenizer(tok, prompt)
    pieces = [detok.add(t) for t in ids[len(prompt):]]
    assert "".join(pieces) + detok.flush() == answer  # " Hello": the space a lone decode would drop is kept
    assert all("\ufffd" not in p for p in pieces)
    assert b"".join(tok.token_bytes(t) for t in ids[len(prompt):]) == answer.encode()
