"""gllm plugin: BERT-family encoders: sentence embeddings (BERT, XLM-R) and cross-encoder rerankers."""

from __future__ import annotations

from gllm_core.hookspecs import hookimpl
from gllm_core.registry import Alias, Architecture

__version__ = "0.1.0"


def _build(config, weights, backend):
    from .model import build_embedding_model  # heavy work stays out of plugin import

    return build_embedding_model(config, weights, backend)


def _build_cross_encoder(config, weights, backend):
    from .classification import build_cross_encoder

    return build_cross_encoder(config, weights, backend)


@hookimpl
def register_architectures(register):
    register(Architecture(
        name="bert",
        build=_build,
        hf_architectures=("BertModel", "BertForMaskedLM", "BertForPreTraining"),
        model_types=("bert",),
        gguf_architectures=("bert",),
        description="BERT encoder with sentence-transformers pooling (embeddings)",
    ))
    register(Architecture(
        name="xlm-roberta",
        build=_build,
        hf_architectures=("XLMRobertaModel",),
        model_types=("xlm-roberta",),
        description="XLM-RoBERTa encoder with sentence-transformers pooling (embeddings)",
    ))
    register(Architecture(
        name="bert-cross-encoder",
        build=_build_cross_encoder,
        hf_architectures=("BertForSequenceClassification", "XLMRobertaForSequenceClassification"),
        description="BERT / XLM-R sequence classification: cross-encoder rerankers (bge-reranker, ms-marco)",
    ))


@hookimpl
def register_aliases(register):
    for name, repo in [
        ("all-minilm:l6", "sentence-transformers/all-MiniLM-L6-v2"),
        ("all-minilm:l12", "sentence-transformers/all-MiniLM-L12-v2"),
        ("bge-small-en:v1.5", "BAAI/bge-small-en-v1.5"),
        ("bge-base-en:v1.5", "BAAI/bge-base-en-v1.5"),
        ("bge-large-en:v1.5", "BAAI/bge-large-en-v1.5"),
        ("paraphrase-minilm:l6", "sentence-transformers/paraphrase-MiniLM-L6-v2"),
        ("multi-qa-minilm:l6", "sentence-transformers/multi-qa-MiniLM-L6-cos-v1"),
    ]:
        register(Alias(name=name, repo=repo, description="sentence embeddings (BERT)"))
    for name, repo in [
        ("bge-reranker:base", "BAAI/bge-reranker-base"),
        ("bge-reranker:large", "BAAI/bge-reranker-large"),
        ("bge-reranker:v2-m3", "BAAI/bge-reranker-v2-m3"),
        ("ms-marco-minilm:l2", "cross-encoder/ms-marco-MiniLM-L2-v2"),
        ("ms-marco-minilm:l4", "cross-encoder/ms-marco-MiniLM-L4-v2"),
        ("ms-marco-minilm:l6", "cross-encoder/ms-marco-MiniLM-L6-v2"),
        ("ms-marco-minilm:l12", "cross-encoder/ms-marco-MiniLM-L12-v2"),
    ]:
        register(Alias(name=name, repo=repo, description="cross-encoder reranker"))
