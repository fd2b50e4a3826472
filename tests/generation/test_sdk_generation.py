"""Chat and text completions through gllm.Client on the tiny random-weight Llama, Qwen2 and
Qwen3-MoE fixtures of the architecture plugins (made with transformers: each reference.npz holds
the float32 logits of four prompts and their greedy continuations)."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

import gllm
from gllm_core.chat_template import template_for
from gllm_core.generation import engine_for

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = {  # the untied Llama samples varied text; the tied one repeats itself
    "llama": ROOT / "plugins" / "arch_llama" / "tests" / "fixtures" / "tiny-llama-untied",
    "qwen2": ROOT / "plugins" / "arch_qwen" / "tests" / "fixtures" / "tiny-qwen2",
    "qwen3-moe": ROOT / "plugins" / "arch_qwen" / "tests" / "fixtures" / "tiny-qwen3-moe",
}
HELLO = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello there, ça va? 中文"}]


@pytest.fixture(scope="module")
def client():
    return gllm.Client(backend="numpy")


@pytest.fixture(params=sorted(FIXTURES))
def tiny(request):
    """(model path, its transformers reference)"""
    return str(FIXTURES[request.param]), np.load(FIXTURES[request.param] / "reference.npz")


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    return x - x.max() - np.log(np.exp(x - x.max()).sum())


def test_prompts_batched_in_one_request_give_transformers_greedy_continuations(client, tiny):
    path, ref = tiny
    tok = client.load(path).tokenizer
    prompts = [ref[f"prompt_ids_{i}"].tolist() for i in range(4)]
    out = client.completions.create(model=path, prompt=prompts, max_tokens=16, temperature=0, ignore_eos=True)
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    for i, choice in enumerate(out.choices):
        assert choice.text == tok.decode(ref[f"greedy_{i}"].tolist()) and choice.finish_reason == "length"
    assert out.usage.prompt_tokens == sum(map(len, prompts)) and out.usage.completion_tokens == 64
    assert out.object == "text_completion" and out.id.startswith("cmpl-")


def test_a_batch_of_different_lengths_samples_exactly_what_each_samples_alone(client, tiny):
    path, ref = tiny
    prompts = ["Hi", "Tell me a long story about a cat and a dog please", "ü 中文 😀", "x = 1; " * 12]
    params = dict(max_tokens=24, temperature=1.0, seed=11, ignore_eos=True)
    together = client.completions.create(model=path, prompt=prompts, **params).choices
    for p, choice in zip(prompts, together):
        alone = client.completions.create(model=path, prompt=p, **params)
        assert alone.choices[0].text == choice.text
    greedy_together = client.completions.create(model=path, prompt=prompts, max_tokens=12, temperature=0).choices
    for p, choice in zip(prompts, greedy_together):
        assert client.completions.create(model=path, prompt=p, max_tokens=12,
                                         temperature=0).choices[0].text == choice.text


def test_seeded_sampling_is_reproducible_and_top_k_1_is_greedy(client, tiny):
    path, ref = tiny
    kw = dict(model=path, messages=HELLO, max_tokens=20, temperature=1.2, ignore_eos=True)
    a = client.chat.completions.create(seed=5, **kw).choices[0].message.content
    assert a == client.chat.completions.create(seed=5, **kw).choices[0].message.content
    assert a != client.chat.completions.create(seed=6, **kw).choices[0].message.content
    greedy = client.chat.completions.create(**dict(kw, temperature=0)).choices[0].message.content
    assert client.chat.completions.create(top_k=1, seed=9, **kw).choices[0].message.content == greedy
    n3 = client.chat.completions.create(n=3, seed=5, **kw)
    assert [c.index for c in n3.choices] == [0, 1, 2] and len({c.message.content for c in n3.choices}) == 3
    assert n3.usage.completion_tokens == 60


def test_stop_strings_cut_the_text_exactly(client, tiny):
    path, ref = tiny
    kw = dict(model=path, prompt="Once upon a time", max_tokens=40, temperature=1.5, seed=3, ignore_eos=True)
    full = client.completions.create(**kw).choices[0].text
    cut_at = next(i for i in range(6, len(full) - 3) if "\ufffd" not in full[i:i + 3] and full[i:i + 3].strip())
    stop = full[cut_at:cut_at + 3]
    expected = full[:full.index(stop)]
    out = client.completions.create(stop=[stop, "never-there"], **kw).choices[0]
    assert out.text == expected and out.finish_reason == "stop"
    streamed = list(client.completions.create(stop=stop, stream=True, **kw))
    assert "".join(c.choices[0].text for c in streamed) == expected
    assert [c.choices[0].finish_reason for c in streamed][-1] == "stop"


def test_streaming_adds_up_to_the_whole_answer(client, tiny):
    path, ref = tiny
    kw = dict(model=path, messages=HELLO, max_tokens=30, temperature=1.0, seed=21, ignore_eos=True)
    whole = client.chat.completions.create(**kw)
    with client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw) as stream:
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].object == "chat.completion.chunk"
    body = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in body) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in body] == [None] * (len(body) - 1) + ["length"]
    assert all(not (c.choices[0].delta.content or "").endswith("\ufffd") for c in body[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert len({c.id for c in chunks}) == 1


def test_logprobs_match_transformers_logits_and_the_text(client, tiny):
    path, ref = tiny
    out = client.completions.create(model=path, prompt=[ref[f"prompt_ids_{i}"].tolist() for i in range(4)],
                                    max_tokens=5, temperature=0, ignore_eos=True, logprobs=3)
    tok = client.load(path).tokenizer
    for i, choice in enumerate(out.choices):
        expected = log_softmax(ref[f"logits_{i}"][-1])  # transformers' float32 logits of the last prompt token
        lp = choice.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
        first = int(ref[f"greedy_{i}"][0])
        assert abs(lp.token_logprobs[0] - expected[first]) < 1e-4
        best = np.argsort(-expected)[:3]
        assert list(lp.top_logprobs[0].values()) == pytest.approx(expected[best].tolist(), abs=1e-4)
        assert lp.tokens[0] == tok.decode([first]) or lp.tokens[0].startswith("bytes:")
        assert lp.text_offset[0] == 0
    chat = client.chat.completions.create(model=path, messages=HELLO, max_tokens=25, temperature=1.0, seed=2,
                                          ignore_eos=True, logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert len(content) == 25 and all(len(e.top_logprobs) == 2 for e in content)
    assert all(e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob >= -1e30 for e in content)
    assert all(e.logprob <= e.top_logprobs[0].logprob + 1e-12 for e in content)
    raw = b"".join(bytes(e.bytes) for e in content)
    assert raw.decode("utf-8", "replace") == chat.choices[0].message.content


def test_end_of_sequence_comes_from_the_model_config(client, tiny):
    path, ref = tiny
    out = client.chat.completions.create(model=path, messages=HELLO, temperature=0, logit_bias={"2": 100})
    choice = out.choices[0]  # token 2 is <|im_end|>: eos_token_id of config.json and generation_config.json
    assert choice.finish_reason == "stop" and choice.message.content == "" and out.usage.completion_tokens == 1


def test_closing_a_stream_cancels_it_and_frees_its_cache(client, tiny):
    path, ref = tiny
    loaded = client.load(path)
    engine = engine_for(loaded)
    stream = client.chat.completions.create(model=path, messages=HELLO, max_tokens=60, temperature=1.0,
                                            ignore_eos=True, stream=True)
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    assert not engine.has_unfinished() and engine.num_running == 0
    unread = client.chat.completions.create(model=path, messages=HELLO, max_tokens=5, stream=True)
    del unread  # a stream never read never starts
    assert not engine.has_unfinished()


def test_threads_share_the_engine_and_each_gets_its_own_answer(client, tiny):
    path, ref = tiny
    kw = dict(model=path, max_tokens=16, temperature=1.0, ignore_eos=True)
    prompts = ["a", "bb bb", "the quick brown fox", "ça"]
    alone = [client.completions.create(prompt=p, seed=i, **kw).choices[0].text for i, p in enumerate(prompts)]
    got: dict[int, str] = {}
    barrier = threading.Barrier(len(prompts))

    def worker(i):
        barrier.wait()
        got[i] = "".join(c.choices[0].text for c in client.completions.create(prompt=prompts[i], seed=i, stream=True,
                                                                              **kw))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [got[i] for i in range(len(prompts))] == alone


def test_async_client_streams_with_async_for(client, tiny):
    path, ref = tiny
    kw = dict(model=path, messages=HELLO, max_tokens=12, temperature=0.9, seed=8, ignore_eos=True)
    expected = client.chat.completions.create(**kw).choices[0].message.content

    async def main():
        async with gllm.AsyncClient(backend="numpy") as aclient:
            whole = await aclient.chat.completions.create(**kw)
            stream = await aclient.chat.completions.create(stream=True, **kw)
            parts = [chunk.choices[0].delta.content or "" async for chunk in stream]
            text = await aclient.completions.builder().model(path).prompt("hi").max_tokens(4).temperature(0).generate()
            return whole.choices[0].message.content, "".join(parts), text

    whole, streamed, text = asyncio.run(main())
    assert whole == streamed == expected
    assert text.choices[0].text == client.completions.create(model=path, prompt="hi", max_tokens=4,
                                                             temperature=0).choices[0].text


def test_builder_and_openai_shapes(client, tiny):
    path, ref = tiny
    built = (client.chat.completions.builder().model(path).messages(HELLO).max_tokens(6).temperature(0)
             .ignore_eos(True).generate())
    direct = client.chat.completions.create(model=path, messages=HELLO, max_tokens=6, temperature=0, ignore_eos=True)
    assert built.choices[0].message.content == direct.choices[0].message.content
    d = built.model_dump()
    assert d["object"] == "chat.completion" and d["choices"][0]["message"]["role"] == "assistant"
    assert json.loads(built.model_dump_json())["usage"]["total_tokens"] == built.usage.total_tokens
    tok = client.load(path).tokenizer
    prompt = tok.encode_prompt(template_for(tok).render(HELLO), add_special_tokens=False)
    assert built.usage.prompt_tokens == len(prompt)
    with pytest.raises(AttributeError, match="no field 'modle'"):
        client.chat.completions.builder().modle(path)


def test_chat_prompt_is_the_rendered_template_tokenized_as_transformers_does(client, tiny):
    path, ref = tiny
    tok = client.load(path).tokenizer
    assert tok.encode_prompt(str(ref["chat_text"]), add_special_tokens=False) == ref["chat_ids"].tolist()


@pytest.mark.parametrize("kwargs, field", [
    (dict(max_tokens=-1), "max_tokens"), (dict(temperature=-0.5), "temperature"), (dict(top_p=0), "top_p"),
    (dict(top_p=1.01), "top_p"), (dict(n=0), "n"), (dict(messages=[]), "messages"),
    (dict(messages=[{"role": "robot", "content": "x"}]), "role"), (dict(messages=[{"role": "user"}]), "content"),
    (dict(top_logprobs=3), "top_logprobs"), (dict(logprobs=True, top_logprobs=50), "top_logprobs"),
    (dict(max_tokens=500), "context length of 128"), (dict(stop=[""]), "stop"), (dict(seed=1.5), "seed"),
    (dict(presence_penalty=5), "presence_penalty"), (dict(logit_bias={"999": 1}), "vocabulary"),
    (dict(response_format={"type": "json_object"}), "response_format"), (dict(stream="yes"), "stream"),
    (dict(stream_options={"bogus": 1}), "stream_options"),
])
def test_bad_chat_requests_raise_bad_request(client, tiny, kwargs, field):
    path, ref = tiny
    args = dict(model=path, messages=HELLO, max_tokens=4)
    args.update(kwargs)
    with pytest.raises(gllm.BadRequestError, match=field):
        client.chat.completions.create(**args)


@pytest.mark.parametrize("prompt, match", [
    ([], "prompt"), ([[]], "empty"), ([1, 2, 999], "vocabulary"), (["a", [1]], "mix"), (3, "prompt"),
    (list(range(128)), "context length"),
])
def test_bad_prompts_raise_bad_request(client, tiny, prompt, match):
    path, ref = tiny
    with pytest.raises(gllm.BadRequestError, match=match):
        client.completions.create(model=path, prompt=prompt, max_tokens=1)


def test_a_chat_template_reaching_python_internals_is_refused(client, tiny, tmp_path):
    path, ref = tiny
    evil = tmp_path / "evil-llama"
    shutil.copytree(path, evil)
    config = json.loads((evil / "tokenizer_config.json").read_text())
    config["chat_template"] = "{{ cycler.__init__.__globals__.os.system('echo pwned') }}"
    (evil / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(gllm.UnsafeTemplateError, match="Python internals") as info:
        client.chat.completions.create(model=str(evil), messages=HELLO, max_tokens=2)
    assert isinstance(info.value, gllm.GllmError)
    # the same model still completes plain text
    assert client.completions.create(model=str(evil), prompt="x", max_tokens=2, temperature=0).choices
