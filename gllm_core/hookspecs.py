"""The hooks a gllm plugin can implement.

Every registering hook receives a ``register`` callback and calls it once per thing it brings;
the core validates each registration. Hooks run once, when the plugin manager loads, never in a
forward pass. A hook implementation names only the arguments it uses, so hooks can grow
arguments without breaking plugins. Put heavy imports inside hook bodies, not at module top.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("gllm")
hookimpl = pluggy.HookimplMarker("gllm")


@hookspec
def register_backends(register):
    """Register kernel sets: ``register(BackendSpec(name=, probe=, create=))``.

    ``probe()`` returns a ``BackendProbe`` (available?, priority, detail); ``create(**options)``
    returns an object implementing ``gllm_core.backend.Backend``.
    """


@hookspec
def register_architectures(register):
    """Register model architectures: ``register(Architecture(name=, hf_architectures=,
    model_types=, gguf_architectures=, build=))``.

    ``build(config, weights, backend)`` returns a model built from ``gllm_core.nn`` layers.
    """


@hookspec
def register_weight_formats(register):
    """Register weight formats: ``register(WeightFormat(name=, sniff=, open=))``.

    ``sniff(path)`` says whether the file or folder is in this format; ``open(path)`` returns a
    ``WeightSource`` (names → WeightMatrix / WeightVector, plus metadata).
    """


@hookspec
def register_tokenizers(register):
    """Register tokenizer loaders: ``register(TokenizerLoader(name=, sniff=, load=))``.

    ``sniff(path)`` says whether this loader can read the model's tokenizer; ``load(path,
    config)`` returns a ``gllm_core.tokenizer.Tokenizer``.
    """


@hookspec
def register_aliases(register):
    """Register short model names: ``register(Alias(name="qwen2.5:0.5b", repo="Qwen/...",
    file=None, description=""))``. ``file`` picks one file of a repository (GGUF repos)."""


@hookspec
def register_commands(cli):
    """Add subcommands to the ``gllm`` command line; ``cli`` is its ``click.Group``."""
