"""``gllm serve``: the HTTP server driven by the official ``openai`` client on a loopback port.

The server runs in-process (uvicorn in a thread, ``gllm.server.running``); every answer is held
against what the SDK gives for the same request."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from gllm.server import Limits, create_app, running

KEY = "test-key"


@pytest.fixture(scope="module")
def server(client, minilm):
    app = create_app([minilm], client=client, api_key=KEY)
    with running(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def api(server):
    url, _ = server
    return openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def _http(server, method, path, *, key=KEY, **kwargs):
    url, _ = server
    headers = kwargs.pop("headers", {})
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.request(method, url + path, headers=headers, timeout=60, **kwargs)


def _assert_error(response, status, code=None, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


# -- models, health, auth ---------------------------------------------------------------------

def test_models_and_health(server, api, minilm):
    assert [m.id for m in api.models.list()] == [minilm]
    card = api.models.retrieve(minilm)
    assert card.id == minilm and card.object == "model" and card.owned_by == "gllm"
    with pytest.raises(openai.NotFoundError) as info:
        api.models.retrieve("no-such-model")
    assert info.value.body["code"] == "model_not_found"
    health = _http(server, "GET", "/health", key=None)  # open without the key
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_api_key_required_on_every_route_but_health(server, minilm):
    url, _ = server
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/embeddings"), ("POST", "/v1/chat/completions"),
                         ("POST", "/v1/completions"), ("POST", "/v1/rerank"), ("POST", "/rerank"),
                         ("GET", f"/v1/models/{minilm}"), ("GET", "/nowhere")]:
        _assert_error(_http(server, method, path, key=None), 401, "invalid_api_key")
        _assert_error(_http(server, method, path, key="wrong"), 401, "invalid_api_key")
    wrong = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.embeddings.create(model=minilm, input="x")


def test_binds_loopback_by_default():
    import inspect

    from gllm.server import run

    assert inspect.signature(run.serve).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(run.running).parameters["host"].default == "127.0.0.1"


# -- embeddings -----------------------------------------------------------------------------------

TEXTS = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today.",
         "Le chat est sur la table.", "x " * 300]


def test_embeddings_equal_the_sdk(api, client, minilm):
    want = client.embeddings.create(model=minilm, input=TEXTS)
    got = api.embeddings.create(model=minilm, input=TEXTS)  # openai asks for base64 and decodes it
    assert [d.index for d in got.data] == list(range(len(TEXTS)))
    np.testing.assert_array_equal(np.array([d.embedding for d in got.data], dtype=np.float32),
                                  np.array([d.embedding for d in want.data], dtype=np.float32))
    assert got.usage.prompt_tokens == got.usage.total_tokens == want.usage.total_tokens
    assert got.model == minilm and got.object == "list" and got.data[0].object == "embedding"
    as_float = api.embeddings.create(model=minilm, input=TEXTS[:2], encoding_format="float")
    np.testing.assert_allclose(as_float.data[1].embedding, want.data[1].embedding, atol=2e-6)
    short = api.embeddings.create(model=minilm, input=TEXTS[0], dimensions=64)
    sdk_short = client.embeddings.create(model=minilm, input=TEXTS[0], dimensions=64)
    assert len(short.data[0].embedding) == 64
    np.testing.assert_allclose(short.data[0].embedding, sdk_short.data[0].embedding, atol=1e-6)


def test_embeddings_of_token_ids(api, client, minilm):
    ids = client.load(minilm).tokenizer.encode("hello world")
    got = api.embeddings.create(model=minilm, input=[ids, ids[:3]])
    want = client.embeddings.create(model=minilm, input=[ids, ids[:3]])
    np.testing.assert_allclose([d.embedding for d in got.data], [d.embedding for d in want.data], atol=1e-6)


def test_concurrent_embedding_requests_each_equal_alone(api, client, minilm):
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'the weather'} " * (1 + i % 3) for i in range(32)]
    alone = [np.array(client.embeddings.create(model=minilm, input=t).data[0].embedding) for t in texts]
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda t: api.embeddings.create(model=minilm, input=t), texts, timeout=120))
    for want, got in zip(alone, results):
        np.testing.assert_allclose(got.data[0].embedding, want, atol=1e-5)


def test_waiting_requests_merge_into_one_batch(server, api, minilm):
    _, app = server
    served = app.state.gllm.models[minilm]
    batcher = served.embedder
    texts = [f"text {i}" for i in range(12)]
    before = (batcher.batches_run, batcher.requests_run)
    with served.loaded.lock:  # the model is busy: every request waits
        pool = ThreadPoolExecutor(len(texts))
        futures = [pool.submit(api.embeddings.create, model=minilm, input=t) for t in texts]
        deadline = time.monotonic() + 60
        while not (batcher.running and batcher.running + batcher.pending == len(texts)):
            assert time.monotonic() < deadline, (batcher.running, batcher.pending)
            time.sleep(0.01)  # the first batch is inside the forward, blocked on the lock; the rest queue
        waiting = batcher.pending
    results = [f.result(timeout=60) for f in futures]
    pool.shutdown()
    ran = (batcher.batches_run - before[0], batcher.requests_run - before[1])
    assert ran == (1 + (waiting > 0), len(texts))  # the blocked batch, then all that waited, together
    for t, r in zip(texts, results):
        alone = api.embeddings.create(model=minilm, input=t)
        np.testing.assert_allclose(r.data[0].embedding, alone.data[0].embedding, atol=1e-5)


# -- rerank ---------------------------------------------------------------------------------------

CROSS_ENCODER_DIR = Path(__file__).resolve().parents[1] / "plugins" / "arch_bert" / "tests" / "fixtures" / "tiny-bert-cls1"
DOCS = ["A kitten sleeps on the sofa.", "Stock prices fell.", {"text": "Cats purr when happy.", "id": 7},
        "The weather is nice today."]


@pytest.fixture(scope="module")
def cross_encoder(client):
    if client.store.get("tiny-cross-encoder") is None:
        client.store.import_path(CROSS_ENCODER_DIR, "tiny-cross-encoder")
    return "tiny-cross-encoder"


@pytest.fixture(scope="module")
def rerank_server(client, minilm, cross_encoder):
    app = create_app([minilm, cross_encoder], client=client)
    with running(app) as url:
        yield url, app, openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


def _rerank(api, path="/rerank", **body):
    """POST through the openai client (it has no rerank method, but sends any route)."""
    return api.post(path, body=body, cast_to=object)


@pytest.mark.parametrize("which", ["minilm", "cross_encoder"])
def test_rerank_equals_the_sdk(rerank_server, client, which, request):
    _, _, api = rerank_server
    model = request.getfixturevalue(which)
    want = client.rerank.create(model=model, query="a cat", documents=DOCS, top_n=3)
    got = _rerank(api, model=model, query="a cat", documents=DOCS, top_n=3)
    assert [r["index"] for r in got["results"]] == [r.index for r in want.results]
    np.testing.assert_allclose([r["relevance_score"] for r in got["results"]],
                               [r.relevance_score for r in want.results], atol=1e-6)
    assert [r["document"] for r in got["results"]] == [r.document for r in want.results]
    assert got["results"][[r["index"] for r in got["results"]].index(2)]["document"] == {"text": "Cats purr when happy.",
                                                                                         "id": 7}
    assert got["model"] == model and got["usage"]["total_tokens"] == want.usage.total_tokens
    url, _, _ = rerank_server
    plain = httpx.post(url + "/rerank", json=dict(model=model, query="a cat", documents=DOCS, return_documents=False),
                       timeout=60).json()  # Jina's and Cohere's path without the /v1
    assert len(plain["results"]) == 4 and all(r["document"] is None for r in plain["results"])


def test_concurrent_reranks_merge_and_each_equal_alone(rerank_server, client, cross_encoder):
    _, app, api = rerank_server
    served = app.state.gllm.models[cross_encoder]
    queries = [f"query {i} about {'cats' if i % 2 else 'money'}" for i in range(8)]
    alone = [client.rerank.create(model=cross_encoder, query=q, documents=DOCS, return_documents=False)
             for q in queries]
    batcher = served.reranker
    before = batcher.batches_run
    pool = ThreadPoolExecutor(len(queries))
    with served.loaded.lock:  # the model is busy: every request waits
        futures = [pool.submit(_rerank, api, model=cross_encoder, query=q, documents=DOCS, return_documents=False)
                   for q in queries]
        deadline = time.monotonic() + 60
        while not (batcher.running and batcher.running + batcher.pending == len(queries)):
            assert time.monotonic() < deadline, (batcher.running, batcher.pending)
            time.sleep(0.01)
        waiting = batcher.pending
    results = [f.result(timeout=60) for f in futures]
    pool.shutdown()
    assert batcher.batches_run - before == 1 + (waiting > 0)
    for want, got in zip(alone, results):
        assert [r["index"] for r in got["results"]] == [r.index for r in want.results]
        np.testing.assert_allclose([r["relevance_score"] for r in got["results"]],
                                   [r.relevance_score for r in want.results], atol=1e-5)


def test_rerank_bad_requests(rerank_server, minilm, cross_encoder):
    url, _, api = rerank_server
    post = lambda body: httpx.post(url + "/v1/rerank", json=body, timeout=60)  # noqa: E731
    _assert_error(post({"model": minilm, "documents": ["a"]}), 400, "missing_required_parameter", "query")
    _assert_error(post({"model": minilm, "query": "q"}), 400, "missing_required_parameter", "documents")
    _assert_error(post({"model": minilm, "query": "", "documents": ["a"]}), 400, param="query")
    _assert_error(post({"model": minilm, "query": "q", "documents": "a"}), 400, "invalid_type", "documents")
    _assert_error(post({"model": minilm, "query": "q", "documents": [{"title": "x"}]}), 400, param="documents")
    _assert_error(post({"model": minilm, "query": "q", "documents": ["a"], "top_n": 0}), 400, "invalid_value",
                  "top_n")
    _assert_error(post({"model": "nope", "query": "q", "documents": ["a"]}), 404, "model_not_found", "model")
    with pytest.raises(openai.BadRequestError):
        _rerank(api, model=cross_encoder, query="word " * 600, documents=["a"])


# -- bad requests --------------------------------------------------------------------------------

def test_bad_requests_get_status_and_error_shape(server, api, minilm):
    with pytest.raises(openai.NotFoundError) as info:
        api.embeddings.create(model="no-such-model", input="x")
    assert info.value.status_code == 404 and info.value.body["param"] == "model"
    post = lambda body, **kw: _http(server, "POST", "/v1/embeddings", **kw,  # noqa: E731
                                    content=body if isinstance(body, bytes) else json.dumps(body).encode())
    _assert_error(post(b"{not json"), 400, "invalid_json")
    _assert_error(post(b""), 400, "invalid_json")
    _assert_error(post([1, 2]), 400, "invalid_json")
    _assert_error(post({"input": "x"}), 400, "missing_required_parameter", "model")
    _assert_error(post({"model": 3, "input": "x"}), 400, "invalid_type", "model")
    _assert_error(post({"model": minilm}), 400, "missing_required_parameter", "input")
    _assert_error(post({"model": minilm, "input": 5}), 400, "invalid_type", "input")
    _assert_error(post({"model": minilm, "input": []}), 400, param="input")
    _assert_error(post({"model": minilm, "input": ["a", 1]}), 400, param="input")
    _assert_error(post({"model": minilm, "input": [[1, 2, 10**9]]}), 400, param="input")
    _assert_error(post({"model": minilm, "input": "a", "encoding_format": "int8"}), 400, "invalid_value",
                  "encoding_format")
    _assert_error(post({"model": minilm, "input": "a", "dimensions": 0}), 400, "invalid_value", "dimensions")
    _assert_error(post({"model": minilm, "input": "a", "dimensions": 4096}), 400, param="dimensions")
    _assert_error(_http(server, "GET", "/v1/embeddings"), 405, "method_not_allowed")
    _assert_error(_http(server, "GET", "/v2/anything"), 404, "not_found")
    with pytest.raises(openai.BadRequestError) as info:
        api.embeddings.create(model=minilm, input=[])
    assert info.value.status_code == 400


def test_limits_are_enforced_and_named(client, minilm):
    limits = Limits(max_inputs=3, max_input_tokens=20, max_body_bytes=2000)
    with running(create_app([minilm], client=client, limits=limits)) as url:
        api = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as info:
            api.embeddings.create(model=minilm, input=["a", "b", "c", "d"])
        assert info.value.body["code"] == "max_inputs" and "--max-inputs" in info.value.body["message"]
        with pytest.raises(openai.BadRequestError) as info:
            api.embeddings.create(model=minilm, input="word " * 30)
        assert info.value.body["code"] == "max_input_tokens" and "max_input_tokens" in info.value.body["message"]
        big = json.dumps({"model": minilm, "input": "y" * 5000}).encode()
        error = _assert_error(httpx.post(url + "/v1/embeddings", content=big), 413, "max_body_bytes")
        assert "2000 bytes" in error["message"]

        def chunks():  # no Content-Length: counted while read
            for _ in range(10):
                yield b" " * 500

        _assert_error(httpx.post(url + "/v1/embeddings", content=chunks()), 413, "max_body_bytes")
        assert len(api.embeddings.create(model=minilm, input=["a", "b", "c"]).data) == 3  # within the limits


def test_create_app_refuses_models_that_do_not_load(client, minilm):
    import gllm

    with pytest.raises(gllm.ModelNotFoundError):
        create_app(["no-such-model-anywhere"], client=client)
    with pytest.raises(gllm.BadRequestError):
        create_app([], client=client)
    with pytest.raises(gllm.BadRequestError):
        create_app([minilm, minilm], client=client)
    with pytest.raises(gllm.BadRequestError):
        Limits(max_tokens=0)


# -- the command line ----------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gllm_serve_command_serves_and_shuts_down_on_sigint(minilm):
    port = _free_port()
    env = dict(os.environ, GLLM_API_KEY="from-env")
    proc = subprocess.Popen([sys.executable, "-m", "gllm", "serve", "--model", minilm, "--backend", "numpy",
                             "--port", str(port), "--max-inputs", "2", "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gllm serve did not come up"
            time.sleep(0.2)
        api = openai.OpenAI(base_url=url + "/v1", api_key="from-env", max_retries=0)
        assert len(api.embeddings.create(model=minilm, input=["a", "b"]).data) == 2
        with pytest.raises(openai.BadRequestError) as info:
            api.embeddings.create(model=minilm, input=["a", "b", "c"])
        assert info.value.body["code"] == "max_inputs"
        assert httpx.get(url + "/v1/models", timeout=5).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/v1" in err and "API key required" in err


def test_gllm_serve_command_fails_clearly_on_an_unknown_model():
    proc = subprocess.run([sys.executable, "-m", "gllm", "serve", "--model", "no-such-model-anywhere",
                           "--backend", "numpy", "--port", str(_free_port())],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "no-such-model-anywhere" in proc.stderr and "Traceback" not in proc.stderr
