"""The model store: ``<GLLM_HOME>/models/``, filled by hub downloads and by imports of local copies.

An entry is a folder ``models/<key>``, where the key is a hub repository id (``org/name``) or a
plain local name (``name``). An entry is complete only when its manifest, ``.gllm-entry.json``,
is present; the manifest is written last (temp file + ``os.replace``), so a folder without one is
debris from an interrupted download or import and is never listed or resolved.

Staging areas inside ``models/`` start with a dot and can never collide with a key:

- ``.partial/<key>/``  hub downloads in progress (``local_dir`` of huggingface_hub, which keeps its
  ``.incomplete`` files there, so an interrupted ``pull`` resumes where it stopped);
- ``.tmp-<random>/``    imports being copied, and entries being replaced or removed.

Resolution order for a model name (``resolve``): an existing local path, an alias, a complete
store entry, a hub download (never when offline: ``HF_HUB_OFFLINE`` / ``GLLM_OFFLINE``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import attrs

from .errors import DownloadError, GllmError, InvalidModelNameError, ModelNotFoundError, OfflineError

MANIFEST = ".gllm-entry.json"
MANIFEST_VERSION = 1
PARTIAL_DIR = ".partial"
TMP_PREFIX = ".tmp-"
STALE_TMP_SECONDS = 3600.0

_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_MAX_COMPONENT = 96
_MAX_KEY = 200
# What the hub accepts as a repository id (no ':'); names outside it are never looked up there.
_HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_TRUE = {"1", "true", "yes", "on"}

#: What ``pull`` downloads from a repository by default: configs, tokenizers, safetensors weights
#: (sharded too) and the sentence-transformers module files. Pickled / ONNX / TF / Flax weights
#: are skipped (gllm never loads pickles), as are GGUF files unless an alias names one.
DEFAULT_ALLOW_PATTERNS = (
    "*.json",  # config, tokenizer, generation config, safetensors index, sentence-transformers files
    "*.txt",  # vocab.txt, merges.txt
    "*.model",  # SentencePiece tokenizer.model
    "*.tiktoken",
    "*.jinja",  # chat_template.jinja
    "*.safetensors",
    "1_Pooling/*",
    "2_Normalize/*",
    "2_Dense/*",
    "README.md",
)
DEFAULT_IGNORE_PATTERNS = (
    "onnx/*", "openvino/*", "coreml/*", "tf_model*", "flax_model*", "rust_model*",
    "*.bin", "*.onnx", "*.h5", "*.msgpack", "*.ot", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.gguf",
)

_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc",)
_HASH_CHUNK = 1 << 20


# -- environment -------------------------------------------------------------------------------

def gllm_home() -> Path:
    """``$GLLM_HOME`` or ``~/.gllm``."""
    home = os.environ.get("GLLM_HOME")
    return Path(home).expanduser() if home else Path.home() / ".gllm"


def models_dir() -> Path:
    return gllm_home() / "models"


def _offline_var() -> str | None:
    for var in ("GLLM_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return var
    return None


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``GLLM_OFFLINE`` is 1/true/yes/on."""
    return _offline_var() is not None


# -- records -----------------------------------------------------------------------------------

@attrs.frozen
class ResolvedModel:
    """Where a model name points: ``path`` is a folder, or one file for GGUF-style entries.

    ``key`` is the store key (None for a plain local path); ``file`` the file inside the entry
    that ``path`` points at, if any.
    """

    name: str
    path: Path
    key: str | None = None
    file: str | None = None


@attrs.frozen
class StoreFile:
    path: str  # relative to the entry folder, '/'-separated
    size: int
    sha256: str


@attrs.frozen
class StoreEntry:
    """A complete store entry, as described by its manifest."""

    key: str
    path: Path
    size: int
    source: str  # "hub" | "import"
    repo: str | None
    file: str | None
    created: float  # seconds since the epoch
    name: str  # the name it was pulled / imported under
    files: tuple[StoreFile, ...] = ()
    aliases: tuple[str, ...] = ()

    @property
    def model_path(self) -> Path:
        """The entry folder, or the file inside it for single-file (GGUF) entries."""
        return self.path / self.file if self.file else self.path


# -- helpers -----------------------------------------------------------------------------------

def _allowed_text() -> str:
    return ("a model name is an alias, a hub repository id 'org/name', or a local name 'name': "
            "1 or 2 parts separated by '/', each starting with a letter or digit and made of "
            "letters, digits and . _ : - (no '..', no leading '/', no backslash, "
            f"at most {_MAX_COMPONENT} characters a part)")


def validate_key(name: Any) -> str:
    """Return ``name`` if it is a valid store key, else raise InvalidModelNameError."""
    if not isinstance(name, str):
        raise InvalidModelNameError(f"model name must be a string, got {type(name).__name__}; {_allowed_text()}")
    problem = None
    if not name:
        problem = "is empty"
    elif len(name) > _MAX_KEY:
        problem = f"is longer than {_MAX_KEY} characters"
    elif "\\" in name:
        problem = "contains a backslash"
    elif name.startswith("/") or name.startswith("~"):
        problem = "is an absolute path (and no such file or folder exists)"
    elif ".." in name:
        problem = "contains '..'"
    else:
        parts = name.split("/")
        if len(parts) > 2:
            problem = "has more than 2 parts"
        elif any(len(p) > _MAX_COMPONENT for p in parts):
            problem = f"has a part longer than {_MAX_COMPONENT} characters"
        elif not all(_COMPONENT.match(p) for p in parts):
            problem = "has an empty part or a character outside letters, digits and . _ : -"
        elif any(p.endswith(".") for p in parts):
            problem = "has a part ending in '.'"
    if problem:
        raise InvalidModelNameError(f"invalid model name {name!r}: it {problem}; {_allowed_text()}")
    return name


def _validate_relfile(file: str, what: str) -> str:
    """A relative file path inside an entry: no absolute paths, no '..', no backslashes."""
    parts = file.split("/") if isinstance(file, str) else []
    if (not isinstance(file, str) or not file or file.startswith("/") or "\\" in file
            or any(p in ("", ".", "..") for p in parts) or re.match(r"^[A-Za-z]:", file)):
        raise InvalidModelNameError(f"{what}: file {file!r} must be a relative path inside the model folder")
    return file


def sha256_file(path: os.PathLike | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _iter_files(folder: Path) -> Iterable[tuple[Path, str]]:
    """(absolute path, '/'-separated relative path) of the files under folder, following links."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for fn in sorted(filenames):
            if fn.endswith(_SKIP_SUFFIXES):
                continue
            full = Path(dirpath) / fn
            yield full, full.relative_to(folder).as_posix()


def _alias_file(alias: Any) -> str | None:
    return getattr(alias, "file", None) or None


# -- the store ---------------------------------------------------------------------------------

class ModelStore:
    """The models folder (``root``, default ``$GLLM_HOME/models``) and the aliases that point into it.

    ``aliases`` maps alias names to records with ``repo`` and ``file`` (``registry.Alias``); the
    store never loads plugins itself.
    """

    def __init__(self, root: os.PathLike | str | None = None, aliases: Mapping[str, Any] | None = None):
        self.root = Path(root).expanduser() if root is not None else models_dir()
        self.aliases: Mapping[str, Any] = dict(aliases or {})

    def __repr__(self) -> str:
        return f"ModelStore(root={str(self.root)!r}, aliases={len(self.aliases)})"

    # -- names ---------------------------------------------------------------------------------
    def canonical(self, name: str) -> tuple[str, str | None]:
        """``(key, file)`` for a name: an alias gives its repository id (and file), any other name
        is validated as a key. Raises InvalidModelNameError naming the name and what is allowed."""
        if isinstance(name, str) and name in self.aliases:
            alias = self.aliases[name]
            key = validate_key(alias.repo)
            file = _alias_file(alias)
            if file is not None:
                _validate_relfile(file, f"alias {name!r}")
            return key, file
        return validate_key(name), None

    def entry_dir(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _partial_dir(self, key: str) -> Path:
        return self.root.joinpath(PARTIAL_DIR, *key.split("/"))

    def _aliases_for(self, key: str) -> tuple[str, ...]:
        return tuple(sorted(n for n, a in self.aliases.items() if getattr(a, "repo", None) == key))

    # -- manifests -----------------------------------------------------------------------------
    def _read_manifest(self, folder: Path) -> dict | None:
        try:
            with open(folder / MANIFEST, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("files"), list):
            return None
        return data

    def _entry_from(self, key: str, folder: Path, data: Mapping[str, Any], check_files: bool) -> StoreEntry | None:
        try:
            files = tuple(StoreFile(path=_validate_relfile(f["path"], key), size=int(f["size"]),
                                    sha256=str(f["sha256"])) for f in data["files"])
            file = data.get("file")
            if file is not None:
                _validate_relfile(file, key)
        except (KeyError, TypeError, ValueError, GllmError):
            return None
        if check_files:
            for f in files:
                try:
                    if (folder / f.path).stat().st_size != f.size:
                        return None
                except OSError:
                    return None
        return StoreEntry(
            key=key, path=folder, size=sum(f.size for f in files), source=str(data.get("source", "import")),
            repo=data.get("repo"), file=file, created=float(data.get("created", 0.0)),
            name=str(data.get("name", key)), files=files, aliases=self._aliases_for(key))

    def _complete_entry(self, key: str, check_files: bool = True) -> StoreEntry | None:
        folder = self.entry_dir(key)
        data = self._read_manifest(folder)
        if data is None:
            return None
        return self._entry_from(key, folder, data, check_files)

    def _manifest(self, folder: Path, *, key: str, name: str, source: str, repo: str | None,
                  file: str | None, hashes: Mapping[str, tuple[int, str]] | None = None) -> dict:
        files = []
        for full, rel in _iter_files(folder):
            if rel == MANIFEST or rel.startswith(MANIFEST + "."):
                continue
            if hashes and rel in hashes:
                size, digest = hashes[rel]
            else:
                size, digest = full.stat().st_size, sha256_file(full)
            files.append({"path": rel, "size": size, "sha256": digest})
        if file is not None and not (folder / file).is_file():
            raise ModelNotFoundError(f"{name!r}: file {file!r} is missing from {folder}")
        return {"version": MANIFEST_VERSION, "key": key, "name": name, "source": source, "repo": repo,
                "file": file, "files": files, "created": time.time()}

    # -- conflicts between plain names and organisation folders ---------------------------------
    def _check_key_free(self, key: str) -> None:
        parts = key.split("/")
        if len(parts) == 2:
            if (self.root / parts[0] / MANIFEST).exists():
                raise InvalidModelNameError(
                    f"cannot store {key!r}: the store already holds a model named {parts[0]!r} in "
                    f"{self.root / parts[0]}; remove it (gllm rm {parts[0]}) or choose another name")
        else:
            folder = self.root / key
            if folder.is_dir() and not (folder / MANIFEST).exists():
                nested = [c.name for c in folder.iterdir() if c.is_dir() and (c / MANIFEST).exists()]
                if nested:
                    raise InvalidModelNameError(
                        f"cannot store a model named {key!r}: {folder} holds the models "
                        f"{', '.join(key + '/' + n for n in sorted(nested))}; choose another name")

    # -- install / swap ------------------------------------------------------------------------
    def _new_tmp(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            path = self.root / f"{TMP_PREFIX}{secrets.token_hex(8)}"
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue

    def _install(self, staging: Path, key: str) -> Path:
        """Move a fully prepared folder (manifest included) to ``models/<key>``, replacing what is there."""
        target = self.entry_dir(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if target.exists() or target.is_symlink():
            old = self.root / f"{TMP_PREFIX}old-{secrets.token_hex(8)}"
            os.replace(target, old)
        try:
            os.replace(staging, target)
        except BaseException:
            if old is not None and not target.exists():
                with contextlib.suppress(OSError):
                    os.replace(old, target)
                    old = None
            raise
        finally:
            if old is not None:
                _rmtree(old)
        return target

    def _prune_empty_parents(self, path: Path, stop: Path) -> None:
        path = path.parent
        while path != stop and stop in path.parents:
            try:
                path.rmdir()
            except OSError:
                return
            path = path.parent

    # -- public API ----------------------------------------------------------------------------
    def get(self, name: str) -> StoreEntry | None:
        """The complete entry for an alias or key, or None."""
        key, _ = self.canonical(name)
        return self._complete_entry(key)

    def list(self) -> list[StoreEntry]:  # noqa: A003 - the store's own vocabulary
        """Complete entries, sorted by key. Folders without a manifest are skipped."""
        out: list[StoreEntry] = []
        if not self.root.is_dir():
            return out
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(".") or not child.is_dir() or not _COMPONENT.match(child.name):
                continue
            data = self._read_manifest(child)
            if data is not None:
                entry = self._entry_from(child.name, child, data, check_files=False)
                if entry:
                    out.append(entry)
                continue
            for grandchild in sorted(child.iterdir()):
                if grandchild.name.startswith(".") or not grandchild.is_dir():
                    continue
                key = f"{child.name}/{grandchild.name}"
                try:
                    validate_key(key)
                except InvalidModelNameError:
                    continue
                data = self._read_manifest(grandchild)
                if data is not None:
                    entry = self._entry_from(key, grandchild, data, check_files=False)
                    if entry:
                        out.append(entry)
        return out

    def resolve(self, name: str, *, download: bool = True, progress: bool = True) -> ResolvedModel:
        """Local path → alias → complete store entry → hub download (unless offline or ``download=False``)."""
        if isinstance(name, (str, os.PathLike)):
            local = Path(os.path.expanduser(os.fspath(name)))
            if str(name) and local.exists():
                return ResolvedModel(name=os.fspath(name), path=local.resolve())
        if isinstance(name, os.PathLike):
            raise ModelNotFoundError(f"no file or folder at {os.fspath(name)!r}")
        key, file = self.canonical(name)
        entry = self._complete_entry(key)
        if entry is not None:
            use = file or entry.file
            if use is None or (entry.path / use).is_file():
                return ResolvedModel(name=name, path=entry.path / use if use else entry.path, key=key, file=use)
        var = _offline_var()
        if var is not None:
            raise OfflineError(
                f"model {name!r} is not in the model store ({self.root}) and offline mode is on "
                f"({var}={os.environ.get(var)}), so it cannot be downloaded. Bring a local copy in with "
                f"`gllm import PATH --name {name}`, or run `gllm pull {name}` when online.")
        if not download or not _HUB_REPO.match(key):
            known = ", ".join(sorted(self.aliases)) or "none"
            raise ModelNotFoundError(
                f"model {name!r} is not a local path, a known alias or a model in the store "
                f"({self.root}). Known aliases: {known}. Bring a local copy in with "
                f"`gllm import PATH --name {name}`" + ("." if _HUB_REPO.match(key) is None
                                                        else f", or run `gllm pull {name}`."))
        entry = self.pull(name, progress=progress)
        use = file or entry.file
        return ResolvedModel(name=name, path=entry.path / use if use else entry.path, key=key, file=use)

    def pull(self, name: str, progress: bool = True, *, file: str | None = None,
             allow_patterns: Iterable[str] | None = None,
             ignore_patterns: Iterable[str] | None = None) -> StoreEntry:
        """Download a repository (or the one file an alias names) into the store.

        Files go to ``models/.partial/<key>`` first, so an interrupted pull resumes on the next
        call; the folder moves into place and gets its manifest only once every file is there.
        """
        key, alias_file = self.canonical(name)
        file = alias_file or (_validate_relfile(file, name) if file else None)
        var = _offline_var()
        if var is not None:
            raise OfflineError(
                f"cannot pull {name!r}: offline mode is on ({var}={os.environ.get(var)}). Bring a local "
                f"copy in with `gllm import PATH --name {name}`, or unset {var} and run `gllm pull {name}`.")
        if not _HUB_REPO.match(key):
            raise ModelNotFoundError(
                f"{name!r} is neither a known alias nor a hub repository id 'org/name'; "
                f"bring a local copy in with `gllm import PATH --name {name}`")
        self._check_key_free(key)
        self.cleanup_partials()
        partial = self._partial_dir(key)
        partial.mkdir(parents=True, exist_ok=True)

        import huggingface_hub  # only here: offline use never touches the hub library

        try:
            with _progress_bars(progress):
                if file:
                    huggingface_hub.hf_hub_download(repo_id=key, filename=file, local_dir=str(partial))
                else:
                    huggingface_hub.snapshot_download(
                        repo_id=key, local_dir=str(partial),
                        allow_patterns=list(allow_patterns or DEFAULT_ALLOW_PATTERNS),
                        ignore_patterns=list(ignore_patterns if ignore_patterns is not None
                                             else DEFAULT_IGNORE_PATTERNS))
        except (KeyboardInterrupt, GllmError):
            raise
        except Exception as exc:  # noqa: BLE001 - every hub failure becomes a gllm error
            raise _wrap_hub_error(exc, name, key, file) from exc

        _rmtree(partial / ".cache")  # huggingface_hub's resume bookkeeping; done with it
        known: dict[str, tuple[int, str]] = {}
        if file:
            if not (partial / file).is_file():
                raise DownloadError(f"download of {file!r} from {key!r} finished but the file is missing "
                                    f"from {partial}; run `gllm pull {name}` again")
            existing = self._complete_entry(key)
            if existing is not None:  # keep the entry's other files (other quantisations of a GGUF repo)
                for f in existing.files:
                    dst = partial / f.path
                    if f.path == file or dst.exists():
                        continue
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(existing.path / f.path, dst)
                    except OSError:
                        shutil.copy2(existing.path / f.path, dst)
                    known[f.path] = (f.size, f.sha256)
        else:
            names = [rel for _, rel in _iter_files(partial)]
            if not names:
                raise ModelNotFoundError(f"repository {key!r} has no files gllm can use "
                                         f"(patterns {list(allow_patterns or DEFAULT_ALLOW_PATTERNS)})")
            if not any(n.endswith(".safetensors") for n in names):
                raise DownloadError(
                    f"repository {key!r} has no safetensors weights (gllm never loads pickled "
                    f"pytorch_model.bin files); for a GGUF repository use an alias that names the file")
        manifest = self._manifest(partial, key=key, name=name, source="hub", repo=key, file=file, hashes=known)
        _write_json_atomic(partial / MANIFEST, manifest)
        target = self._install(partial, key)
        self._prune_empty_parents(partial, self.root)
        entry = self._entry_from(key, target, manifest, check_files=False)
        assert entry is not None
        return entry

    def import_path(self, path: os.PathLike | str, name: str) -> StoreEntry:
        """Copy a local file or folder into the store under ``name`` (an alias, repo id or local name).

        The copy is made in ``models/.tmp-<random>/`` and moved into place with its manifest only
        when complete; an existing entry is replaced only then. On any failure the temp folder goes.
        """
        key, alias_file = self.canonical(name)
        src = Path(os.path.expanduser(os.fspath(path)))
        if not src.exists():
            raise ModelNotFoundError(f"cannot import {os.fspath(path)!r}: no such file or folder")
        src = src.resolve()
        root = self.root.resolve() if self.root.exists() else self.root
        if src == root or src in root.parents:
            raise InvalidModelNameError(f"cannot import {src}: it contains the model store {self.root}")
        self._check_key_free(key)
        self.cleanup_partials()
        staging = self._new_tmp()
        try:
            hashes: dict[str, tuple[int, str]] = {}
            if src.is_file():
                file = alias_file or src.name
                dst = staging / file
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
                hashes[file] = (dst.stat().st_size, sha256_file(dst))
                existing = self._complete_entry(key) if alias_file else None
                if existing is not None:  # keep the entry's other files (other GGUF quantisations)
                    for f in existing.files:
                        if f.path == file:
                            continue
                        d = staging / f.path
                        d.parent.mkdir(parents=True, exist_ok=True)
                        try:
                            os.link(existing.path / f.path, d)
                        except OSError:
                            shutil.copy2(existing.path / f.path, d)
                        hashes[f.path] = (f.size, f.sha256)
            else:
                file = alias_file
                for full, rel in _iter_files(src):
                    if rel == MANIFEST:
                        continue
                    dst = staging / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(full, dst)
                    hashes[rel] = (dst.stat().st_size, sha256_file(dst))
                if not hashes:
                    raise ModelNotFoundError(f"cannot import {src}: the folder holds no files")
                if file is not None and file not in hashes:
                    raise ModelNotFoundError(
                        f"cannot import {src} as {name!r}: that alias names the file {file!r}, "
                        f"which the folder does not hold")
            manifest = self._manifest(staging, key=key, name=name, source="import",
                                      repo=key if _HUB_REPO.match(key) and "/" in key else None,
                                      file=file, hashes=hashes)
            _write_json_atomic(staging / MANIFEST, manifest)
            target = self._install(staging, key)
        except BaseException:
            _rmtree(staging)
            raise
        entry = self._entry_from(key, target, manifest, check_files=False)
        assert entry is not None
        return entry

    def remove(self, name: str) -> str:
        """Remove an entry (by alias or key) and any partial download of it; returns the key."""
        key, _ = self.canonical(name)
        target = self.entry_dir(key)
        partial = self._partial_dir(key)
        removed = False
        if target.is_dir():
            has_manifest = (target / MANIFEST).exists()
            nested = [c for c in target.iterdir() if c.is_dir() and (c / MANIFEST).exists()]
            if has_manifest or not nested:  # never delete an organisation folder holding models
                trash = self._new_tmp()
                os.replace(target, trash / "entry")
                _rmtree(trash)
                self._prune_empty_parents(target, self.root)
                removed = True
        if partial.exists():
            _rmtree(partial)
            self._prune_empty_parents(partial, self.root / PARTIAL_DIR)
            with contextlib.suppress(OSError):
                (self.root / PARTIAL_DIR).rmdir()
            removed = True
        if not removed:
            raise ModelNotFoundError(f"model {name!r} is not in the model store ({self.root})")
        return key

    def cleanup_partials(self, max_age: float = STALE_TMP_SECONDS) -> list[Path]:
        """Remove ``.tmp-*`` folders older than ``max_age`` seconds (left by killed imports)."""
        removed = []
        if not self.root.is_dir():
            return removed
        now = time.time()
        for child in self.root.iterdir():
            if not child.name.startswith(TMP_PREFIX):
                continue
            try:
                if now - child.stat().st_mtime < max_age:
                    continue
            except OSError:
                continue
            if child.is_dir() and not child.is_symlink():
                _rmtree(child)
            else:
                with contextlib.suppress(OSError):
                    child.unlink()
            removed.append(child)
        return removed


# -- hub helpers -------------------------------------------------------------------------------

@contextlib.contextmanager
def _progress_bars(show: bool):
    try:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    except ImportError:  # pragma: no cover - very old huggingface_hub
        yield
        return
    if show or are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()


def _wrap_hub_error(exc: BaseException, name: str, key: str, file: str | None) -> GllmError:
    try:
        from huggingface_hub import errors as hf
    except ImportError:  # pragma: no cover
        hf = None
    what = f"{key!r}" + (f" (file {file!r})" if file else "")
    resume = f"run `gllm pull {name}` again to resume"

    def isa(*names: str) -> bool:
        classes = tuple(c for c in (getattr(hf, n, None) for n in names) if isinstance(c, type))
        return bool(classes) and isinstance(exc, classes)

    if isa("GatedRepoError"):
        return ModelNotFoundError(f"repository {what} is gated: accept its licence on the hub and set "
                                  f"HF_TOKEN, then {resume} ({exc})")
    if isa("RepositoryNotFoundError"):
        return ModelNotFoundError(f"no hub repository {what} (or it is private: set HF_TOKEN) for "
                                  f"model {name!r}; a local copy can be brought in with "
                                  f"`gllm import PATH --name {name}`")
    if isa("RevisionNotFoundError"):
        return ModelNotFoundError(f"hub repository {what} has no such revision ({exc})")
    if isa("LocalEntryNotFoundError"):
        return DownloadError(f"could not reach the hub to download {what}: {exc}. Check the network, "
                             f"then {resume}; or bring a local copy in with `gllm import PATH --name {name}`")
    if isa("EntryNotFoundError", "RemoteEntryNotFoundError"):
        return ModelNotFoundError(f"hub repository {key!r} has no file {file!r} ({exc})")
    if isa("HfHubHTTPError"):
        return DownloadError(f"the hub refused the download of {what}: {exc}; {resume}")
    return DownloadError(f"download of {what} failed: {type(exc).__name__}: {exc}; {resume}")


__all__ = [
    "DEFAULT_ALLOW_PATTERNS", "DEFAULT_IGNORE_PATTERNS", "MANIFEST", "ModelStore", "ResolvedModel",
    "StoreEntry", "StoreFile", "gllm_home", "is_offline", "models_dir", "sha256_file", "validate_key",
]
