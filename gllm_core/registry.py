"""What plugins register: small validated records, and the registry that holds them."""

from __future__ import annotations

import re
from typing import Any, Callable

import attrs

from .errors import PluginError

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.:-]*$")


def _check_name(kind: str):
    def check(instance, attribute, value):
        if not isinstance(value, str) or not _NAME.match(value):
            raise PluginError(f"{kind} name {value!r} must be lower-case letters, digits and _.:-")

    return check


def _check_callable(instance, attribute, value):
    if not callable(value):
        raise PluginError(f"{type(instance).__name__}.{attribute.name} must be callable, got {value!r}")


@attrs.frozen
class BackendProbe:
    """What ``probe()`` says about a backend on this machine."""

    available: bool
    priority: int = 0
    detail: str = ""


@attrs.frozen
class BackendSpec:
    """A kernel set. Priorities: GPU OpenCL 300, numba CPU 200, OpenCL on CPU 150, numpy 100."""

    name: str = attrs.field(validator=_check_name("backend"))
    probe: Callable[[], BackendProbe] = attrs.field(validator=_check_callable)
    create: Callable[..., Any] = attrs.field(validator=_check_callable)
    description: str = ""


@attrs.frozen
class Architecture:
    """A model family: the config names it serves and ``build(config, weights, backend)``."""

    name: str = attrs.field(validator=_check_name("architecture"))
    build: Callable[..., Any] = attrs.field(validator=_check_callable)
    hf_architectures: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    model_types: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    gguf_architectures: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    description: str = ""


@attrs.frozen
class WeightFormat:
    """A weight file format: ``sniff(path) -> bool``, ``open(path) -> WeightSource``.

    A format with block-quantized storage types may also offer quantization on load:
    ``quantize(source, type) -> WeightSource`` for each type in ``quant_types``."""

    name: str = attrs.field(validator=_check_name("weight format"))
    sniff: Callable[[Any], bool] = attrs.field(validator=_check_callable)
    open: Callable[[Any], Any] = attrs.field(validator=_check_callable)
    priority: int = 0
    quantize: Callable[[Any, str], Any] | None = None
    quant_types: tuple[str, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class TokenizerLoader:
    """A tokenizer source: ``sniff(path) -> bool``, ``load(path, config) -> Tokenizer``."""

    name: str = attrs.field(validator=_check_name("tokenizer"))
    sniff: Callable[[Any], bool] = attrs.field(validator=_check_callable)
    load: Callable[..., Any] = attrs.field(validator=_check_callable)
    priority: int = 0


@attrs.frozen
class Alias:
    """A short model name for a hub repository (and one file of it, for GGUF repositories)."""

    name: str = attrs.field(validator=_check_name("alias"))
    repo: str = attrs.field()
    file: str | None = None
    description: str = ""

    @repo.validator
    def _repo(self, attribute, value):
        if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", value) or ".." in value:
            raise PluginError(f"alias {self.name!r}: repository {value!r} is not an 'org/name' id")


KINDS = {
    "backends": BackendSpec,
    "architectures": Architecture,
    "weight_formats": WeightFormat,
    "tokenizers": TokenizerLoader,
    "aliases": Alias,
}


@attrs.define
class Registry:
    """Everything the loaded plugins registered, by kind and name, with who registered it."""

    backends: dict[str, BackendSpec] = attrs.Factory(dict)
    architectures: dict[str, Architecture] = attrs.Factory(dict)
    weight_formats: dict[str, WeightFormat] = attrs.Factory(dict)
    tokenizers: dict[str, TokenizerLoader] = attrs.Factory(dict)
    aliases: dict[str, Alias] = attrs.Factory(dict)
    owners: dict[tuple[str, str], str] = attrs.Factory(dict)

    def add_all(self, kind: str, items: list[Any], owner: str) -> None:
        """Add one plugin's registrations for a hook: all of them, or none if any is invalid."""
        expected = KINDS[kind]
        table = getattr(self, kind)
        seen = set()
        for item in items:
            if not isinstance(item, expected):
                raise PluginError(f"register_{kind} expects {expected.__name__} objects, got {type(item).__name__}")
            taken_by = self.owners.get((kind, item.name))
            if item.name in seen or (item.name in table and taken_by != owner):
                raise PluginError(f"{expected.__name__} {item.name!r} is already registered by plugin "
                                  f"{taken_by or owner!r}")
            seen.add(item.name)
        for item in items:
            table[item.name] = item
            self.owners[(kind, item.name)] = owner

    def architecture_for(self, *, hf_architectures=(), model_type=None, gguf_architecture=None):
        for name in hf_architectures or ():
            for arch in self.architectures.values():
                if name in arch.hf_architectures:
                    return arch
        for arch in self.architectures.values():
            if model_type and model_type in arch.model_types:
                return arch
            if gguf_architecture and gguf_architecture in arch.gguf_architectures:
                return arch
        return None
