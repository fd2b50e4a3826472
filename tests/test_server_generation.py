"""``gllm serve`` generation: chat and text completions, streamed, batched, cancelled, limited.

The server runs in-process on a loopback port and is driven by the official ``openai`` client;
every answer is held against what the SDK (``gllm.Client``) gives for the same request, on the
tiny random-weight Llama of the architecture tests (its greedy tokens are checked against
transformers there)."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from gllm.server import Limits, create_app, running

ROOT = Path(__file__).resolve().parents[1]
LLAMA_DIR = ROOT / "plugins" / "arch_llama" / "tests" / "fixtures" / "tiny-llama"
LLAMA = "tiny-llama"
TIMEOUT = 60


@pytest.fixture(scope="module")
def llama(client):
    """The tiny Llama imported into the session's store as a user would."""
    if client.store.get(LLAMA) is None:
        client.store.import_path(LLAMA_DIR, LLAMA)
    return LLAMA


QWEN_DIR = ROOT / "plugins" / "arch_qwen" / "tests" / "fixtures" / "tiny-qwen2"
QWEN = "tiny-qwen2"


@pytest.fixture(scope="module")
def qwen(client):
    """The tiny Qwen2 (QKV bias, its own chat template) imported into the session's store."""
    if client.store.get(QWEN) is None:
        client.store.import_path(QWEN_DIR, QWEN)
    return QWEN


@pytest.fixture(scope="module")
def server(client, minilm, llama, qwen):
    app = create_app([minilm, llama, qwen], client=client)
    with running(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def api(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)


def _messages(i: int) -> list[dict]:
    return [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": f"Question {i}: " + "why " * (i % 7) + "the sky?"}]


def _loaded(app, name):
    return app.state.gllm.models[name].loaded


def _engine(app, name):
    from gllm_core.generation import engine_for

    return engine_for(_loaded(app, name))


def _wait(condition, what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


class _ForwardLog:
    """Records the tokens per sequence of every forward pass of a model (a test-only wrapper);
    with ``pause_at=k`` the k-th pass waits, holding the engine between two steps, until ``resume``."""

    def __init__(self, model, pause_at: int | None = None):
        self.model = model
        self.calls: list[list[int]] = []
        self.pause_at = pause_at
        self.paused = threading.Event()
        self.resume = threading.Event()

    def __enter__(self):
        inner = self.model.forward

        def forward(tokens, caches, *args, **kwargs):
            self.calls.append([len(t) for t in tokens])
            if len(self.calls) == self.pause_at:
                self.paused.set()
                self.resume.wait(TIMEOUT)
            return inner(tokens, caches, *args, **kwargs)

        self.model.forward = forward
        return self

    def __exit__(self, *exc):
        self.resume.set()
        del self.model.forward


# -- answers equal the SDK's ----------------------------------------------------------------------

@pytest.mark.parametrize("which", ["llama", "qwen"])
def test_chat_equals_the_sdk(api, client, which, request):
    model = request.getfixturevalue(which)
    kwargs = dict(model=model, messages=_messages(1), max_tokens=12, temperature=0, extra_body={"ignore_eos": True})
    got = api.chat.completions.create(**kwargs)
    kwargs.update(kwargs.pop("extra_body"))
    want = client.chat.completions.create(**kwargs)
    assert got.choices[0].message.content == want.choices[0].message.content
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].finish_reason == want.choices[0].finish_reason == "length"
    assert got.usage.prompt_tokens == want.usage.prompt_tokens
    assert got.usage.completion_tokens == want.usage.completion_tokens == 12
    assert got.object == "chat.completion" and got.model == model and got.id.startswith("chatcmpl-")
    tokens = client.load(model).tokenizer.encode(got.choices[0].message.content, add_special_tokens=False)
    assert tokens  # a real answer came back, not an empty string


def test_chat_stream_adds_up_to_the_whole_answer(api, client, llama):
    kwargs = dict(model=llama, messages=_messages(2), max_tokens=20, temperature=0)
    want = client.chat.completions.create(**kwargs, ignore_eos=True).choices[0].message.content
    kwargs["extra_body"] = {"ignore_eos": True}  # gllm's (and vLLM's) extra parameter
    chunks = list(api.chat.completions.create(**kwargs, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)  # no usage chunk unless asked
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    with_usage = list(api.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert with_usage[-1].choices == [] and with_usage[-1].usage.completion_tokens == 20
    assert "".join(c.choices[0].delta.content or "" for c in with_usage if c.choices) == want


def test_sampling_with_a_seed_and_several_choices_equals_the_sdk(api, client, llama):
    kwargs = dict(model=llama, messages=_messages(3), max_tokens=10, temperature=0.9, top_p=0.95, seed=7, n=3)
    want = client.chat.completions.create(**kwargs)
    got = api.chat.completions.create(**kwargs)
    assert [c.message.content for c in got.choices] == [c.message.content for c in want.choices]
    assert [c.index for c in got.choices] == [0, 1, 2]
    streamed = ["", "", ""]
    for chunk in api.chat.completions.create(**kwargs, stream=True):
        for c in chunk.choices:
            streamed[c.index] += c.delta.content or ""
    assert streamed == [c.message.content for c in want.choices]


def test_chat_logprobs_equal_the_sdk(api, client, llama):
    kwargs = dict(model=llama, messages=_messages(4), max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    want = client.chat.completions.create(**kwargs).choices[0].logprobs.content
    got = api.chat.completions.create(**kwargs).choices[0].logprobs.content
    assert [t.token for t in got] == [t.token for t in want] and len(got) == 6
    np.testing.assert_allclose([t.logprob for t in got], [t.logprob for t in want], rtol=1e-6)
    assert [[x.token for x in t.top_logprobs] for t in got] == [[x.token for x in t.top_logprobs] for t in want]


def test_text_completions_equal_the_sdk(api, client, llama):
    kwargs = dict(model=llama, prompt=["Once upon a time", "The"], max_tokens=9, temperature=0, logprobs=2)
    want = client.completions.create(**kwargs)
    got = api.completions.create(**kwargs)
    assert [c.text for c in got.choices] == [c.text for c in want.choices]
    assert got.choices[1].logprobs.tokens == want.choices[1].logprobs.tokens
    assert got.choices[1].logprobs.text_offset == want.choices[1].logprobs.text_offset
    assert got.usage.total_tokens == want.usage.total_tokens and got.object == "text_completion"
    streamed = {}
    for chunk in api.completions.create(**kwargs, stream=True):
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + c.text
    assert [streamed[0], streamed[1]] == [c.text for c in want.choices]
    default = api.completions.create(model=llama, prompt="Hi", temperature=0, extra_body={"ignore_eos": True})
    assert default.usage.completion_tokens == 16  # OpenAI's default max_tokens for completions


def test_sse_wire_format(server, llama):
    url, _ = server
    body = {"model": llama, "messages": _messages(5), "max_tokens": 4, "temperature": 0, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=TIMEOUT) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(response.iter_bytes()).decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for event in events[:-2]:
        assert event.startswith("data: ")
        assert json.loads(event[6:])["object"] == "chat.completion.chunk"


# -- concurrency ----------------------------------------------------------------------------------

def test_32_chat_streams_and_32_embeddings_at_once_each_equal_alone(server, api, client, llama, minilm):
    _, app = server
    prompts = [_messages(i) for i in range(32)]
    texts = [f"embedding text number {i}" for i in range(32)]
    alone = [client.chat.completions.create(model=llama, messages=m, max_tokens=10, temperature=0)
             .choices[0].message.content for m in prompts]
    alone_vectors = [client.embeddings.create(model=minilm, input=t).data[0].embedding for t in texts]

    def chat(m):
        return "".join(c.choices[0].delta.content or "" for c in api.chat.completions.create(
            model=llama, messages=m, max_tokens=10, temperature=0, stream=True) if c.choices)

    def embed(t):
        return api.embeddings.create(model=minilm, input=t).data[0].embedding

    loaded = _loaded(app, llama)
    with _ForwardLog(loaded.model) as log, ThreadPoolExecutor(64) as pool:
        with loaded.lock:  # hold the model until every stream is inside the engine: they start together
            chats = [pool.submit(chat, m) for m in prompts]
            embeds = [pool.submit(embed, t) for t in texts]
            slots = app.state.gllm.models[llama].generator
            _wait(_in_engine(slots, 32), "32 running streams")
        got = [f.result(timeout=TIMEOUT) for f in chats]
        vectors = [f.result(timeout=TIMEOUT) for f in embeds]
    assert got == alone
    for want, have in zip(alone_vectors, vectors):
        np.testing.assert_allclose(have, want, atol=1e-5)
    assert max(len(c) for c in log.calls) == 32  # all 32 decoded in one batch
    assert len(log.calls) < 32 * 11 / 4  # far fewer forward passes than requests × tokens


def _in_engine(slots, count):
    return lambda: len(slots.running) == count and all(r.unfinished for g in list(slots.running)
                                                       for r in g.stream.requests)


def test_a_new_request_joins_the_running_decode_batch(server, api, llama):
    _, app = server
    loaded = _loaded(app, llama)
    slots = app.state.gllm.models[llama].generator
    with _ForwardLog(loaded.model, pause_at=4) as log, ThreadPoolExecutor(1) as pool:
        stream = api.chat.completions.create(model=llama, messages=_messages(6), max_tokens=60, temperature=0,
                                             stream=True, extra_body={"ignore_eos": True})
        _wait(log.paused.is_set, "the first request to decode a few tokens")
        second = pool.submit(api.chat.completions.create, model=llama, messages=_messages(7), max_tokens=5,
                             temperature=0)
        _wait(_in_engine(slots, 2), "the second request")
        log.resume.set()
        chunks = list(stream)
        assert second.result(timeout=TIMEOUT).usage.completion_tokens == 5
    assert chunks[-1].choices[0].finish_reason == "length"
    assert log.calls[:4] == [[log.calls[0][0]], [1], [1], [1]]  # the first alone: its prompt, then decoding
    # the next pass carried the first sequence's next token beside the second one's whole prompt
    assert log.calls[4][0] == 1 and log.calls[4][1] > 1 and len(log.calls[4]) == 2, log.calls[:6]
    assert [1, 1] in log.calls[5:]  # then both decode together


def test_a_client_that_disconnects_frees_its_sequence(server, llama):
    url, app = server
    loaded = _loaded(app, llama)
    engine = _engine(app, llama)
    slots = app.state.gllm.models[llama].generator
    body = {"model": llama, "messages": _messages(8), "max_tokens": 60, "temperature": 0, "stream": True,
            "ignore_eos": True}
    with _ForwardLog(loaded.model, pause_at=6) as log:
        with httpx.Client(timeout=TIMEOUT) as http:
            with http.stream("POST", url + "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                lines = response.iter_lines()  # kept: dropping a half-read iterator closes the connection
                while not (line := next(lines)).startswith("data: {") or \
                        not json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    pass  # until it is generating
                _wait(log.paused.is_set, "the engine to pause mid-answer")
                (gen,) = list(slots.running)
            # the connection is closed here, with 54 tokens still to come
        _wait(lambda: gen._cancelled, "the server to notice the disconnect")
        log.resume.set()
        _wait(gen.finished.is_set, "the generation thread to end")
    _wait(lambda: not engine.has_unfinished(), "the engine to drop the sequence")
    assert loaded.model.kv_pool.blocks_in_use == 0  # its KV cache is back in the pool
    _wait(lambda: not slots.running, "the slot to be released")  # after the last chunk reached the queue
    left = []
    while not gen.queue.empty():
        left.append(gen.queue.get_nowait())
    assert [c.choices[0].finish_reason for c in left if getattr(c, "choices", None)][-1] == "cancelled"
    usage = [c.usage for c in left if getattr(c, "usage", None)]
    assert usage and usage[-1].completion_tokens <= 6 < 60  # stopped where it was paused
    assert len(log.calls) <= 7


def test_a_client_that_leaves_a_whole_answer_request_frees_its_sequence(server, llama):
    url, app = server
    loaded = _loaded(app, llama)
    engine = _engine(app, llama)
    slots = app.state.gllm.models[llama].generator
    body = {"model": llama, "messages": _messages(12), "max_tokens": 60, "temperature": 0, "ignore_eos": True}
    with _ForwardLog(loaded.model, pause_at=3) as log:
        conn = _raw_post(url, "/v1/chat/completions", body)
        _wait(log.paused.is_set, "the engine to pause mid-answer")
        (gen,) = list(slots.running)
        conn.close()  # hang up before the answer is ready
        _wait(lambda: gen._cancelled, "the server to notice the disconnect")
        log.resume.set()
    _wait(lambda: not slots.running and not engine.has_unfinished(), "the sequence to end")
    assert loaded.model.kv_pool.blocks_in_use == 0
    assert len(log.calls) <= 4  # it stopped where it was, far short of 60 tokens


def _raw_post(url: str, path: str, body: dict):
    """A request sent on a bare socket that reads nothing back (to hang up or stall at will)."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    conn = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    conn.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return conn


def test_a_client_that_reads_nothing_blocks_no_one(server, api, llama):
    url, app = server
    slots = app.state.gllm.models[llama].generator
    silent = _raw_post(url, "/v1/chat/completions", {"model": llama, "messages": _messages(9), "max_tokens": 60,
                                                     "temperature": 0, "stream": True, "ignore_eos": True})
    try:
        _wait(lambda: len(slots.running) == 1, "the silent client's generation")
        (gen,) = list(slots.running)
        others = [api.chat.completions.create(model=llama, messages=_messages(i), max_tokens=6, temperature=0)
                  for i in range(3)]
        assert all(o.usage.completion_tokens == 6 for o in others)
        _wait(gen.finished.is_set, "the unread generation to finish")  # the engine never waited for the reader
    finally:
        silent.close()


# -- limits, overload, errors ---------------------------------------------------------------------

class _FailingForward:
    """The model raises on its k-th forward pass from now (a test-only wrapper)."""

    def __init__(self, model, at: int):
        self.model, self.at, self.calls = model, at, 0

    def __enter__(self):
        inner = self.model.forward

        def forward(*args, **kwargs):
            self.calls += 1
            if self.calls == self.at:
                raise RuntimeError("injected failure")
            return inner(*args, **kwargs)

        self.model.forward = forward
        return self

    def __exit__(self, *exc):
        del self.model.forward


def test_a_model_failure_reaches_the_client_and_the_server_goes_on(server, api, llama):
    _, app = server
    loaded = _loaded(app, llama)
    kwargs = dict(model=llama, messages=_messages(13), max_tokens=20, temperature=0, extra_body={"ignore_eos": True})
    with _FailingForward(loaded.model, at=5):
        with pytest.raises(openai.APIError) as info:
            for _ in api.chat.completions.create(**kwargs, stream=True):
                pass
        assert "injected failure" in str(info.value)
    with _FailingForward(loaded.model, at=2):
        with pytest.raises(openai.InternalServerError) as info:
            api.chat.completions.create(**kwargs)
        assert info.value.body["type"] == "server_error" and "injected failure" in info.value.body["message"]
    assert loaded.model.kv_pool.blocks_in_use == 0
    assert api.chat.completions.create(**kwargs).usage.completion_tokens == 20  # still serving


def test_overload_gets_429_and_the_queue_drains(client, llama):
    limits = Limits(max_concurrent_sequences=1, max_queued_requests=1)
    app = create_app([llama], client=client, limits=limits)
    loaded = _loaded(app, llama)
    slots = app.state.gllm.models[llama].generator
    with running(app) as url:
        api = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)
        call = lambda i: api.chat.completions.create(model=llama, messages=_messages(i), max_tokens=4)  # noqa: E731
        with ThreadPoolExecutor(2) as pool:
            with loaded.lock:
                first = pool.submit(call, 0)
                _wait(lambda: len(slots.running) == 1, "the first request")
                second = pool.submit(call, 1)
                _wait(lambda: slots.waiting == 1, "the second request to queue")
                with pytest.raises(openai.RateLimitError) as info:
                    call(2)
                error = info.value.body
                assert info.value.status_code == 429 and error["code"] == "overloaded"
                assert "--max-queued-requests" in error["message"]
            assert first.result(timeout=TIMEOUT).choices[0].finish_reason
            assert second.result(timeout=TIMEOUT).choices[0].finish_reason
        with pytest.raises(openai.BadRequestError) as info:  # two choices can never fit one slot
            api.chat.completions.create(model=llama, messages=_messages(0), max_tokens=4, n=2)
        assert info.value.body["code"] == "max_concurrent_sequences" and info.value.body["param"] == "n"


def test_generation_limits_and_bad_requests(client, llama, minilm):
    limits = Limits(max_tokens=8, max_input_tokens=30)
    with running(create_app([llama, minilm], client=client, limits=limits)) as url:
        api = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)
        short = [{"role": "user", "content": "Hi"}]
        with pytest.raises(openai.BadRequestError) as info:
            api.chat.completions.create(model=llama, messages=short, max_tokens=9)
        assert info.value.body["code"] == "max_tokens" and info.value.body["param"] == "max_tokens"
        with pytest.raises(openai.BadRequestError) as info:
            api.completions.create(model=llama, prompt="Hi", max_tokens=100)
        assert info.value.body["code"] == "max_tokens"
        with pytest.raises(openai.BadRequestError) as info:
            api.chat.completions.create(model=llama, messages=[{"role": "user", "content": "word " * 40}])
        assert info.value.body["code"] == "max_input_tokens" and "--max-input-tokens" in info.value.body["message"]
        # no max_tokens: the server's limit caps the answer
        capped = api.chat.completions.create(model=llama, messages=short, temperature=0,
                                             extra_body={"ignore_eos": True})
        assert capped.usage.completion_tokens == 8 and capped.choices[0].finish_reason == "length"
        with pytest.raises(openai.NotFoundError) as info:
            api.chat.completions.create(model="no-such-model", messages=short)
        assert info.value.body["code"] == "model_not_found"
        with pytest.raises(openai.BadRequestError) as info:
            api.chat.completions.create(model=minilm, messages=short)
        assert info.value.body["code"] == "model_not_supported"
        with pytest.raises(openai.BadRequestError) as info:
            api.embeddings.create(model=llama, input="x")
        assert info.value.body["code"] == "model_not_supported"
        with pytest.raises(openai.BadRequestError) as info:
            api.chat.completions.create(model=llama, messages=[{"role": "wizard", "content": "x"}])
        assert info.value.body["param"] == "messages"
        with pytest.raises(openai.BadRequestError) as info:
            api.chat.completions.create(model=llama, messages=short, temperature=-1)
        assert info.value.body["param"] == "temperature"
        for body in ({"model": llama}, {"model": llama, "messages": "hi"}, {"model": llama, "messages": [],
                                                                           "stream": "yes"},
                     {"model": llama, "prompt": None}):
            path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
            response = httpx.post(url + path, json=body, timeout=TIMEOUT)
            assert response.status_code == 400, (body, response.text)
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_shutdown_lets_a_running_stream_finish(client, llama):
    app = create_app([llama], client=client)
    engine = _engine(app, llama)
    got = []
    with running(app, graceful_timeout=30) as url:
        api = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)
        stream = api.chat.completions.create(model=llama, messages=_messages(10), max_tokens=40, temperature=0,
                                             stream=True, stream_options={"include_usage": True},
                                             extra_body={"ignore_eos": True})
        got.append(next(stream))
        reader = ThreadPoolExecutor(1).submit(lambda: got.extend(stream))
        # leaving the block shuts the server down while the stream runs
    reader.result(timeout=TIMEOUT)
    assert got[-2].choices[0].finish_reason == "length" and got[-1].usage.completion_tokens == 40
    assert not engine.has_unfinished()


def test_shutdown_past_the_grace_period_cancels_and_frees(client, llama):
    app = create_app([llama], client=client)
    loaded = _loaded(app, llama)
    engine = _engine(app, llama)
    slots = app.state.gllm.models[llama].generator
    chunks, errors = [], []
    with _ForwardLog(loaded.model, pause_at=3) as log:
        with running(app, graceful_timeout=0.5) as url:
            api = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)

            def read():
                try:
                    chunks.extend(api.chat.completions.create(model=llama, messages=_messages(11), max_tokens=60,
                                                              stream=True, extra_body={"ignore_eos": True}))
                except Exception as exc:  # noqa: BLE001 - a cut stream is what the test expects
                    errors.append(exc)

            reader = threading.Thread(target=read)
            reader.start()
            _wait(log.paused.is_set, "the engine to be stuck mid-answer")
            threading.Timer(2.0, log.resume.set).start()  # long after the grace period
        # the server has shut down: past the grace period the stream was cancelled
        reader.join(TIMEOUT)
    assert not reader.is_alive()
    assert not any(c.choices and c.choices[0].finish_reason == "length" for c in chunks)
    assert len(log.calls) <= 4
    assert not engine.has_unfinished() and loaded.model.kv_pool.blocks_in_use == 0
    assert not slots.running
