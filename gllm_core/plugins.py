"""The plugin host: loads built-in and installed plugins through pluggy and fills the Registry.

Installed plugins are entry points in group ``gllm``. ``GLLM_LOAD_PLUGINS`` (comma-separated
entry-point or distribution names) limits which installed plugins load; an empty value loads
none. Built-in plugins always load, through the same hooks. A plugin that fails to import or to
register is recorded with its error and skipped, never fatal to the host.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import sys
import threading
import traceback
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .registry import Registry

GROUP = "gllm"
REGISTER_HOOKS = ("register_backends", "register_architectures", "register_weight_formats",
                  "register_tokenizers", "register_aliases")
ALL_HOOKS = REGISTER_HOOKS + ("register_commands",)

DEFAULT_PLUGINS = (
    "gllm_core.backends.numpy_backend",
    "gllm_core.formats.safetensors_format",
    "gllm_core.tokenizer",
)


@attrs.define
class PluginInfo:
    name: str
    module: str
    version: str | None = None
    builtin: bool = False
    hooks: list[str] = attrs.Factory(list)
    errors: list[str] = attrs.Factory(list)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _short_error(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


class PluginHost:
    """One pluggy manager plus the registry built from its hooks. Loading is idempotent."""

    def __init__(self, load_installed: bool = True):
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._registry: Registry | None = None
        self._lock = threading.RLock()
        for module_name in DEFAULT_PLUGINS:
            self._load_module(module_name, module_name.rsplit(".", 1)[-1], builtin=True)
        if load_installed:
            self._load_entry_points()

    # -- loading -------------------------------------------------------------------------------
    def _load_module(self, module_name: str, name: str, builtin=False, version=None, loader=None):
        info = PluginInfo(name=name, module=module_name, version=version, builtin=builtin)
        self.infos[name] = info
        try:
            module = loader() if loader else importlib.import_module(module_name)
            self.pm.register(module, name=name)
        except BaseException as exc:  # noqa: BLE001 - a broken plugin must not break the host
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            info.errors.append(f"import failed: {_short_error(exc)}")
            return
        info.hooks = sorted(h for h in ALL_HOOKS if self._implements(name, h))

    def _load_entry_points(self):
        allow = os.environ.get("GLLM_LOAD_PLUGINS")
        allowed = None if allow is None else {p.strip() for p in allow.split(",") if p.strip()}
        for ep in md.entry_points(group=GROUP):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            if allowed is not None and ep.name not in allowed and dist_name not in allowed:
                continue
            if ep.name in self.infos:
                continue
            version = dist.version if dist is not None else None
            self._load_module(ep.value, ep.name, version=version, loader=ep.load)
            self.infos[ep.name].module = ep.value

    def _implements(self, plugin_name: str, hook: str) -> bool:
        caller = getattr(self.pm.hook, hook)
        return any(impl.plugin_name == plugin_name for impl in caller.get_hookimpls())

    def register(self, plugin: Any, name: str) -> None:
        """Add a plugin object at run time (tests, embedding applications)."""
        with self._lock:
            self.pm.register(plugin, name=name)
            self.infos[name] = PluginInfo(name=name, module=getattr(plugin, "__name__", repr(plugin)),
                                          hooks=sorted(h for h in ALL_HOOKS if self._implements(name, h)))
            self._registry = None

    def unregister(self, name: str) -> None:
        with self._lock:
            self.pm.unregister(name=name)
            self.infos.pop(name, None)
            self._registry = None

    # -- the registry --------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        with self._lock:
            if self._registry is None:
                self._registry = self._build_registry()
            return self._registry

    def _build_registry(self) -> Registry:
        registry = Registry()
        for info in self.infos.values():
            info.errors = [e for e in info.errors if e.startswith("import failed")]
        for hook in REGISTER_HOOKS:
            kind = hook[len("register_"):]
            # pluggy calls the last registered first; walk in load order so built-ins come first
            for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
                owner = impl.plugin_name
                staged: list[Any] = []
                try:
                    impl.function(**{arg: staged.append for arg in impl.argnames})
                    registry.add_all(kind, staged, owner)
                except BaseException as exc:  # noqa: BLE001
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        raise
                    info = self.infos.setdefault(owner, PluginInfo(name=owner, module=owner))
                    info.errors.append(f"{hook} failed: {_short_error(exc)}")
        return registry

    def add_commands(self, cli) -> None:
        for impl in reversed(self.pm.hook.register_commands.get_hookimpls()):
            try:
                impl.function(**{arg: cli for arg in impl.argnames})
            except BaseException as exc:  # noqa: BLE001
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                self.infos[impl.plugin_name].errors.append(f"register_commands failed: {_short_error(exc)}")

    def plugin_list(self) -> list[PluginInfo]:
        self.registry  # make sure registration errors are recorded
        return list(self.infos.values())


_host: PluginHost | None = None
_host_lock = threading.Lock()


def get_host() -> PluginHost:
    """The process-wide plugin host, loaded once."""
    global _host
    with _host_lock:
        if _host is None:
            _host = PluginHost()
        return _host


def get_registry() -> Registry:
    return get_host().registry


def reset_host() -> None:
    """Forget the loaded plugins; the next call to get_host() loads them again (tests)."""
    global _host
    with _host_lock:
        _host = None
