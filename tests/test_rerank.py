"""client.rerank with the real all-MiniLM-L6-v2: an embedding model reranks by cosine similarity."""

import asyncio
import json

import numpy as np
import pytest

import gllm

QUERY = "How do I bake bread at home?"
DOCUMENTS = [
    "The stock market fell sharply after the announcement.",
    "Mix flour, water, yeast and salt, let the dough rise, then bake it in a hot oven.",
    "Penguins live in the southern hemisphere.",
    "My favourite football team lost again on Sunday.",
    "Sourdough needs a starter, and a long slow rise before baking.",
    "Python is a popular programming language.",
]
RELEVANT = 1  # the recipe; index 4 (sourdough) is related too


def _cosines(client, model, query, documents):
    """Expected scores through the embeddings API, which is checked against sentence-transformers."""
    vectors = np.array([d.embedding for d in client.embeddings.create(model=model, input=[query] + documents).data])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors[1:] @ vectors[0]


def test_minilm_puts_the_relevant_document_first(client, minilm):
    out = client.rerank.create(model=minilm, query=QUERY, documents=DOCUMENTS)
    order = [r.index for r in out.results]
    assert order[0] == RELEVANT and set(order[:2]) == {1, 4}, order
    scores = [r.relevance_score for r in out.results]
    assert scores == sorted(scores, reverse=True)
    assert sorted(order) == list(range(len(DOCUMENTS)))
    expected = _cosines(client, minilm, QUERY, DOCUMENTS)
    for r in out.results:
        assert r.relevance_score == pytest.approx(float(expected[r.index]), abs=1e-5)
        assert r.document == {"text": DOCUMENTS[r.index]}
    assert out.results[0].relevance_score > 0.5 > out.results[-1].relevance_score


def test_response_shape_and_usage(client, minilm):
    out = client.rerank.create(model=minilm, query=QUERY, documents=DOCUMENTS)
    tokenizer = client.load(minilm).tokenizer
    tokens = sum(len(ids) for ids, _ in tokenizer.encode_batch([QUERY] + DOCUMENTS))
    assert out.usage.prompt_tokens == out.usage.total_tokens == tokens
    assert out.model == minilm and out.id.startswith("rerank-")
    dumped = json.loads(out.model_dump_json())
    assert set(dumped) == {"id", "results", "model", "usage"}
    assert set(dumped["results"][0]) == {"index", "relevance_score", "document"}
    assert isinstance(gllm.RerankResponse, type) and isinstance(out.results[0], gllm.RerankResult)


def test_top_n_and_return_documents(client, minilm):
    full = client.rerank.create(model=minilm, query=QUERY, documents=DOCUMENTS)
    two = client.rerank.create(model=minilm, query=QUERY, documents=DOCUMENTS, top_n=2, return_documents=False)
    assert [r.index for r in two.results] == [r.index for r in full.results[:2]]
    assert all(r.document is None for r in two.results)
    many = client.rerank.create(model=minilm, query=QUERY, documents=DOCUMENTS, top_n=100)
    assert [r.index for r in many.results] == [r.index for r in full.results]


def test_dict_documents_come_back_as_given(client, minilm):
    docs = [{"text": d, "id": f"doc-{i}"} for i, d in enumerate(DOCUMENTS)]
    out = client.rerank.create(model=minilm, query=QUERY, documents=docs, top_n=1)
    assert out.results[0].document == {"text": DOCUMENTS[RELEVANT], "id": f"doc-{RELEVANT}"}
    mixed = client.rerank.create(model=minilm, query=QUERY, documents=[DOCUMENTS[0], docs[RELEVANT]])
    assert [r.index for r in mixed.results] == [1, 0]


def test_empty_documents_give_empty_results(client, minilm):
    out = client.rerank.create(model=minilm, query=QUERY, documents=[])
    assert out.results == [] and out.usage.total_tokens == 0


def test_many_documents_in_batches_score_as_alone(client, minilm):
    docs = [f"{DOCUMENTS[i % len(DOCUMENTS)]} ({'again ' * (i % 7)}{i})" for i in range(40)]  # > one batch of 32
    out = client.rerank.create(model=minilm, query=QUERY, documents=docs)
    expected = _cosines(client, minilm, QUERY, docs)
    got = np.zeros(len(docs))
    for r in out.results:
        got[r.index] = r.relevance_score
    np.testing.assert_allclose(got, expected, atol=1e-5)
    for i in (0, 39):
        (alone,) = client.rerank.create(model=minilm, query=QUERY, documents=[docs[i]]).results
        assert alone.relevance_score == pytest.approx(got[i], abs=1e-5)


def test_long_document_is_cut_and_long_query_refused(client, minilm):
    long_doc = "bread flour oven " * 200
    out = client.rerank.create(model=minilm, query=QUERY, documents=[long_doc])
    cut = _cosines(client, minilm, QUERY, [long_doc])  # embeddings cut at 256 tokens too
    assert out.results[0].relevance_score == pytest.approx(float(cut[0]), abs=1e-5)
    with pytest.raises(gllm.BadRequestError, match=r"query is \d+ tokens long, over the model's limit of 256"):
        client.rerank.create(model=minilm, query=long_doc, documents=["a"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(documents=["a"]), "query must be a non-empty string"),
    (dict(query="", documents=["a"]), "query must be a non-empty string"),
    (dict(query=3, documents=["a"]), "query must be a non-empty string"),
    (dict(query="q"), "documents must be a list"),
    (dict(query="q", documents="just one string"), "documents must be a list"),
    (dict(query="q", documents=["a", 3]), r"documents\[1\] must be a string or a dict"),
    (dict(query="q", documents=["a", None]), r"documents\[1\] must be a string or a dict"),
    (dict(query="q", documents=[{"title": "x"}]), r"documents\[0\] is a dict without a 'text' field \(fields: title\)"),
    (dict(query="q", documents=[{"text": 5}]), r"documents\[0\]\['text'\] must be a string"),
    (dict(query="q", documents=["a"], top_n=0), "top_n must be a positive integer"),
    (dict(query="q", documents=["a"], top_n=-2), "top_n must be a positive integer"),
    (dict(query="q", documents=["a"], top_n=True), "top_n must be a positive integer"),
    (dict(query="q", documents=["a"], top_n="2"), "top_n must be a positive integer"),
])
def test_bad_requests_are_clear(client, minilm, kwargs, match):
    with pytest.raises(gllm.BadRequestError, match=match):
        client.rerank.create(model=minilm, **kwargs)


def test_builder_and_async(client, minilm):
    sync = client.rerank.create(model=minilm, query=QUERY, documents=DOCUMENTS, top_n=3)
    built = client.rerank.builder().model(minilm).query(QUERY).documents(DOCUMENTS).top_n(3).generate()
    assert [r.index for r in built.results] == [r.index for r in sync.results]

    async def main():
        async with gllm.AsyncClient(backend="numpy") as aclient:
            one = await aclient.rerank.create(model=minilm, query=QUERY, documents=DOCUMENTS, top_n=3)
            two = await aclient.rerank.builder(model=minilm, query=QUERY).documents(DOCUMENTS).top_n(3).generate()
            return one, two

    one, two = asyncio.run(main())
    for out in (one, two):
        assert [r.index for r in out.results] == [r.index for r in sync.results]
        for a, b in zip(out.results, sync.results):
            assert a.relevance_score == pytest.approx(b.relevance_score, abs=1e-6)


def test_cli_rerank(minilm):
    from click.testing import CliRunner

    from gllm.cli import cli

    args = ["rerank", minilm, QUERY, *DOCUMENTS[:3], "--backend", "numpy"]
    out = CliRunner().invoke(cli, args + ["--json", "--top-n", "2"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["results"][0]["index"] == RELEVANT
    assert len(data["results"]) == 2 and data["results"][0]["document"] == {"text": DOCUMENTS[RELEVANT]}
    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0 and text.output.splitlines()[0].startswith("  1.") and "[1]" in text.output.splitlines()[0]
    bad = CliRunner().invoke(cli, ["rerank", minilm, QUERY, "doc", "--top-n", "0", "--backend", "numpy"])
    assert bad.exit_code == 1 and "top_n must be a positive integer" in bad.output and "Traceback" not in bad.output
