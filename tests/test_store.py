"""The model store: imports, listing, removal, resolution, offline mode and (mocked) hub pulls."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from gllm_core.errors import DownloadError, InvalidModelNameError, ModelNotFoundError, OfflineError
from gllm_core.registry import Alias
from gllm_core.store import MANIFEST, ModelStore, gllm_home, is_offline

ALIASES = {
    "all-minilm:l6": Alias(name="all-minilm:l6", repo="sentence-transformers/all-MiniLM-L6-v2"),
    "tiny-gguf:q4": Alias(name="tiny-gguf:q4", repo="someorg/Tiny-GGUF", file="tiny-q4_0.gguf"),
    "tiny-gguf:q8": Alias(name="tiny-gguf:q8", repo="someorg/Tiny-GGUF", file="tiny-q8_0.gguf"),
}


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "gllm-home"
    monkeypatch.setenv("GLLM_HOME", str(h))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("GLLM_OFFLINE", raising=False)
    return h


@pytest.fixture
def store(home):
    return ModelStore(aliases=ALIASES)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def model_folder(tmp_path):
    src = tmp_path / "src-model"
    (src / "1_Pooling").mkdir(parents=True)
    (src / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (src / "model.safetensors").write_bytes(os.urandom(4096))
    (src / "tokenizer.json").write_text("{}")
    (src / "1_Pooling" / "config.json").write_text("{}")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (src / "helper.pyc").write_bytes(b"junk")
    (src / "helper.py").write_text("# kept\n")
    return src


@pytest.fixture
def gguf_file(tmp_path):
    f = tmp_path / "downloads" / "my-model.Q4_0.gguf"
    f.parent.mkdir()
    f.write_bytes(b"GGUF" + os.urandom(1000))
    return f


def _no_hub(monkeypatch):
    import huggingface_hub

    def boom(*a, **k):
        raise AssertionError("the hub must not be called")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", boom)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", boom)


# -- environment -------------------------------------------------------------------------------

def test_home_and_offline_env(home, monkeypatch):
    assert gllm_home() == home
    assert ModelStore().root == home / "models"
    assert not is_offline()
    for value in ("1", "true", "YES", "on"):
        monkeypatch.setenv("GLLM_OFFLINE", value)
        assert is_offline()
    monkeypatch.setenv("GLLM_OFFLINE", "0")
    assert not is_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert is_offline()


# -- import / list / remove --------------------------------------------------------------------

def test_import_folder_list_remove(store, model_folder, home):
    entry = store.import_path(model_folder, "my-bert")
    assert entry.key == "my-bert"
    assert entry.path == home / "models" / "my-bert"
    assert entry.source == "import"
    assert (entry.path / MANIFEST).is_file()
    copied = {f.path for f in entry.files}
    assert copied == {"config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json", "helper.py"}
    assert not (entry.path / "__pycache__").exists()
    st = next(f for f in entry.files if f.path == "model.safetensors")
    assert st.size == 4096
    import hashlib
    assert st.sha256 == hashlib.sha256((model_folder / "model.safetensors").read_bytes()).hexdigest()

    listed = store.list()
    assert [e.key for e in listed] == ["my-bert"]
    assert listed[0].size == sum(f.size for f in entry.files)
    assert listed[0].created <= time.time()
    # no temp folders left behind
    assert [p.name for p in (home / "models").iterdir()] == ["my-bert"]

    assert store.remove("my-bert") == "my-bert"
    assert store.list() == []
    assert not (home / "models" / "my-bert").exists()
    with pytest.raises(ModelNotFoundError, match="my-bert"):
        store.remove("my-bert")


def test_import_single_file_list_remove(store, gguf_file, home, offline):
    entry = store.import_path(gguf_file, "mymodel:q4")
    assert entry.file == gguf_file.name
    assert [f.path for f in entry.files] == [gguf_file.name]
    r = store.resolve("mymodel:q4")
    assert r.path == home / "models" / "mymodel:q4" / gguf_file.name
    assert r.path.read_bytes() == gguf_file.read_bytes()
    assert r.key == "mymodel:q4" and r.file == gguf_file.name
    assert [e.key for e in store.list()] == ["mymodel:q4"]
    store.remove("mymodel:q4")
    assert store.list() == []
    assert list((home / "models").iterdir()) == []


def test_import_under_alias_then_resolve_by_alias_and_repo(store, model_folder, home, offline, monkeypatch):
    _no_hub(monkeypatch)
    entry = store.import_path(model_folder, "all-minilm:l6")
    assert entry.key == "sentence-transformers/all-MiniLM-L6-v2"
    assert entry.repo == "sentence-transformers/all-MiniLM-L6-v2"
    assert entry.path == home / "models" / "sentence-transformers" / "all-MiniLM-L6-v2"
    assert entry.aliases == ("all-minilm:l6",)

    by_alias = store.resolve("all-minilm:l6")
    assert by_alias.path == entry.path
    assert by_alias.key == entry.key and by_alias.file is None
    by_repo = store.resolve("sentence-transformers/all-MiniLM-L6-v2")
    assert by_repo.path == entry.path

    [listed] = store.list()
    assert listed.key == entry.key and listed.aliases == ("all-minilm:l6",)

    # a store that knows no aliases still finds it by repo id
    assert ModelStore().resolve("sentence-transformers/all-MiniLM-L6-v2").path == entry.path

    store.remove("all-minilm:l6")
    assert store.list() == []
    assert not (home / "models" / "sentence-transformers").exists()


def test_import_single_file_under_gguf_alias(store, gguf_file, home, offline):
    entry = store.import_path(gguf_file, "tiny-gguf:q4")
    assert entry.key == "someorg/Tiny-GGUF" and entry.file == "tiny-q4_0.gguf"
    r = store.resolve("tiny-gguf:q4")
    assert r.path == entry.path / "tiny-q4_0.gguf" and r.path.is_file()
    # the other quantisation of the same repo is not there
    with pytest.raises(OfflineError, match="tiny-gguf:q8"):
        store.resolve("tiny-gguf:q8")
    # importing it keeps the first one
    store.import_path(gguf_file, "tiny-gguf:q8")
    assert store.resolve("tiny-gguf:q8").path.is_file()
    assert store.resolve("tiny-gguf:q4").path.is_file()
    assert {f.path for f in store.get("tiny-gguf:q4").files} == {"tiny-q4_0.gguf", "tiny-q8_0.gguf"}


def test_reimport_replaces_entry(store, model_folder, tmp_path):
    store.import_path(model_folder, "m")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"v": 2}')
    entry = store.import_path(other, "m")
    assert [f.path for f in entry.files] == ["config.json"]
    assert not (entry.path / "model.safetensors").exists()
    assert len(store.list()) == 1


def test_import_missing_path(store, tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such file"):
        store.import_path(tmp_path / "nope", "m")


# -- resolution --------------------------------------------------------------------------------

def test_local_path_wins(store, model_folder, gguf_file, tmp_path, monkeypatch):
    _no_hub(monkeypatch)
    store.import_path(gguf_file, "mymodel")
    assert store.resolve(str(model_folder)).path == model_folder.resolve()
    assert store.resolve(model_folder).key is None
    assert store.resolve(str(gguf_file)).path == gguf_file.resolve()
    # a relative path that exists beats the store entry of the same name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodel").mkdir()
    r = store.resolve("mymodel")
    assert r.path == (tmp_path / "mymodel").resolve() and r.key is None
    # ~ is expanded
    monkeypatch.setenv("HOME", str(tmp_path))
    assert store.resolve("~/src-model").path == model_folder.resolve()


def test_offline_missing_model_message(store, offline, monkeypatch):
    _no_hub(monkeypatch)
    with pytest.raises(OfflineError) as info:
        store.resolve("all-minilm:l6")
    msg = str(info.value)
    assert "all-minilm:l6" in msg
    assert "gllm import PATH --name all-minilm:l6" in msg
    assert "gllm pull all-minilm:l6" in msg
    with pytest.raises(OfflineError, match="someorg/other"):
        store.resolve("someorg/other")
    with pytest.raises(OfflineError):
        store.pull("all-minilm:l6")


def test_gllm_offline_also_blocks_the_hub(store, monkeypatch):
    _no_hub(monkeypatch)
    monkeypatch.setenv("GLLM_OFFLINE", "yes")
    with pytest.raises(OfflineError, match="GLLM_OFFLINE"):
        store.resolve("someorg/other")


def test_unknown_non_hub_name_online(store, monkeypatch):
    _no_hub(monkeypatch)
    with pytest.raises(ModelNotFoundError, match="gllm import PATH --name nothing:here"):
        store.resolve("nothing:here")
    with pytest.raises(ModelNotFoundError):
        store.resolve("someorg/other", download=False)


# -- robustness --------------------------------------------------------------------------------

def test_interrupted_import_leaves_nothing(store, model_folder, home, monkeypatch):
    real = shutil.copy2
    calls = {"n": 0}

    def flaky(src, dst, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (simulated)")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(shutil, "copy2", flaky)
    with pytest.raises(OSError, match="disk full"):
        store.import_path(model_folder, "all-minilm:l6")
    assert calls["n"] == 3
    assert store.list() == []
    assert not (home / "models" / "sentence-transformers" / "all-MiniLM-L6-v2").exists()
    assert [p for p in (home / "models").iterdir() if p.name.startswith(".tmp-")] == []
    with pytest.raises(ModelNotFoundError):
        store.resolve("all-minilm:l6", download=False)


def test_interrupted_reimport_keeps_old_entry(store, model_folder, home, monkeypatch):
    old = store.import_path(model_folder, "m")

    def broken(*a, **k):
        raise OSError("simulated")

    monkeypatch.setattr(shutil, "copy2", broken)
    with pytest.raises(OSError):
        store.import_path(model_folder, "m")
    [entry] = store.list()
    assert entry.files == old.files
    assert (entry.path / "model.safetensors").is_file()


def test_folder_without_manifest_is_not_listed(store, model_folder, home, offline):
    store.import_path(model_folder, "complete")
    debris = home / "models" / "someorg" / "half-done"
    debris.mkdir(parents=True)
    (debris / "config.json").write_text("{}")
    (home / "models" / "plain-debris").mkdir()
    assert [e.key for e in store.list()] == ["complete"]
    with pytest.raises(OfflineError):
        store.resolve("someorg/half-done")
    # removing debris works
    store.remove("someorg/half-done")
    assert not debris.exists()


def test_manifest_with_missing_file_does_not_resolve(store, model_folder, offline):
    entry = store.import_path(model_folder, "m")
    (entry.path / "model.safetensors").unlink()
    with pytest.raises(OfflineError):
        store.resolve("m")


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/b/c", "", "..", "a/../b", "a\\b", "/abs/path",
                                 "-x", ".hidden", "a//b", "x" * 300, "org/" + "n" * 100])
def test_bad_names(store, model_folder, bad):
    with pytest.raises(InvalidModelNameError) as info:
        store.import_path(model_folder, bad)
    assert repr(bad)[:40] in str(info.value) or repr(bad) in str(info.value)
    assert "letters, digits" in str(info.value)
    with pytest.raises(InvalidModelNameError):
        store.canonical(bad)
    with pytest.raises(InvalidModelNameError):
        store.remove(bad)
    with pytest.raises(InvalidModelNameError):
        store.pull(bad)


@pytest.mark.parametrize("bad", ["../x", "a/b/c", "", "x/../y"])
def test_bad_names_resolve(store, bad, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # none of these is an existing local path here
    _no_hub(monkeypatch)
    with pytest.raises(InvalidModelNameError):
        store.resolve(bad)


def test_plain_name_and_org_folder_do_not_clash(store, model_folder):
    store.import_path(model_folder, "someorg/model")
    with pytest.raises(InvalidModelNameError, match="someorg"):
        store.import_path(model_folder, "someorg")
    store.import_path(model_folder, "solo")
    with pytest.raises(InvalidModelNameError, match="solo"):
        store.import_path(model_folder, "solo/sub")
    assert [e.key for e in store.list()] == ["solo", "someorg/model"]


def test_cleanup_partials(store, home):
    models = home / "models"
    models.mkdir(parents=True)
    old = models / ".tmp-old1"
    old.mkdir()
    (old / "f").write_text("x")
    past = time.time() - 7200
    os.utime(old, (past, past))
    fresh = models / ".tmp-fresh"
    fresh.mkdir()
    removed = store.cleanup_partials()
    assert removed == [old]
    assert not old.exists() and fresh.exists()


# -- hub pulls (mocked) ------------------------------------------------------------------------

def _fake_repo_files():
    return {
        "config.json": b'{"model_type": "bert"}',
        "tokenizer.json": b"{}",
        "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
        "1_Pooling/config.json": b"{}",
    }


def test_pull_moves_files_into_place(store, home, monkeypatch):
    import huggingface_hub

    seen = {}

    def fake_snapshot(repo_id, *, local_dir, allow_patterns=None, ignore_patterns=None, **kw):
        seen.update(repo_id=repo_id, local_dir=local_dir, allow=allow_patterns, ignore=ignore_patterns)
        for rel, data in _fake_repo_files().items():
            p = Path(local_dir) / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        (Path(local_dir) / ".cache" / "huggingface").mkdir(parents=True)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    entry = store.pull("all-minilm:l6", progress=False)
    assert seen["repo_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert Path(seen["local_dir"]) == home / "models" / ".partial" / "sentence-transformers" / "all-MiniLM-L6-v2"
    assert "*.safetensors" in seen["allow"] and "1_Pooling/*" in seen["allow"]
    assert "*.bin" in seen["ignore"]
    assert entry.source == "hub" and entry.repo == "sentence-transformers/all-MiniLM-L6-v2"
    assert entry.path == home / "models" / "sentence-transformers" / "all-MiniLM-L6-v2"
    assert (entry.path / MANIFEST).is_file()
    assert {f.path for f in entry.files} == set(_fake_repo_files())
    assert not (entry.path / ".cache").exists()
    assert not (home / "models" / ".partial").exists()
    assert [e.key for e in store.list()] == [entry.key]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert store.resolve("all-minilm:l6").path == entry.path


def test_resolve_downloads_when_online(store, home, monkeypatch):
    import huggingface_hub

    def fake_snapshot(repo_id, *, local_dir, **kw):
        for rel, data in _fake_repo_files().items():
            p = Path(local_dir) / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    r = store.resolve("someorg/some-model", progress=False)
    assert r.key == "someorg/some-model"
    assert r.path == home / "models" / "someorg" / "some-model"
    assert (r.path / "model.safetensors").is_file()


def test_interrupted_pull_resumes(store, home, monkeypatch):
    import huggingface_hub

    calls = {"n": 0}
    files = _fake_repo_files()

    def flaky_snapshot(repo_id, *, local_dir, **kw):
        calls["n"] += 1
        local = Path(local_dir)
        for i, (rel, data) in enumerate(files.items()):
            p = local / rel
            if p.exists():
                continue  # resumed: already there
            if calls["n"] == 1 and i == 2:
                (local / ".cache").mkdir(exist_ok=True)
                (local / ".cache" / "model.safetensors.incomplete").write_bytes(data[:5])
                raise ConnectionError("connection reset (simulated)")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", flaky_snapshot)
    with pytest.raises(DownloadError) as info:
        store.pull("all-minilm:l6", progress=False)
    assert "gllm pull all-minilm:l6" in str(info.value)
    assert store.list() == []
    assert not (home / "models" / "sentence-transformers" / "all-MiniLM-L6-v2").exists()
    partial = home / "models" / ".partial" / "sentence-transformers" / "all-MiniLM-L6-v2"
    assert (partial / "config.json").is_file()  # kept for resuming
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError):
        store.resolve("all-minilm:l6")
    monkeypatch.delenv("HF_HUB_OFFLINE")

    entry = store.pull("all-minilm:l6", progress=False)
    assert calls["n"] == 2
    assert {f.path for f in entry.files} == set(files)
    assert [e.key for e in store.list()] == ["sentence-transformers/all-MiniLM-L6-v2"]
    assert not partial.exists()


def test_pull_single_file_alias(store, home, monkeypatch):
    import huggingface_hub

    def fake_file(repo_id, filename, *, local_dir, **kw):
        p = Path(local_dir) / filename
        p.write_bytes(b"GGUF" + filename.encode())
        return str(p)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_file)
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, **k: pytest.fail("snapshot_download for a single-file alias"))
    e4 = store.pull("tiny-gguf:q4", progress=False)
    assert e4.file == "tiny-q4_0.gguf"
    e8 = store.pull("tiny-gguf:q8", progress=False)
    assert {f.path for f in e8.files} == {"tiny-q4_0.gguf", "tiny-q8_0.gguf"}
    assert store.resolve("tiny-gguf:q4").path.read_bytes() == b"GGUFtiny-q4_0.gguf"
    assert store.resolve("tiny-gguf:q8").path.read_bytes() == b"GGUFtiny-q8_0.gguf"


def test_pull_hub_errors_are_wrapped(store, monkeypatch):
    import huggingface_hub
    from huggingface_hub import errors as hf

    def not_found(repo_id, **kw):
        exc = hf.RepositoryNotFoundError.__new__(hf.RepositoryNotFoundError)
        Exception.__init__(exc, "404 simulated")
        raise exc

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_found)
    with pytest.raises(ModelNotFoundError, match="someorg/missing"):
        store.pull("someorg/missing", progress=False)

    def no_weights(repo_id, *, local_dir, **kw):
        (Path(local_dir) / "config.json").write_text("{}")
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_weights)
    with pytest.raises(DownloadError, match="safetensors"):
        store.pull("someorg/pickled", progress=False)
    assert store.list() == []


def test_cli_store_round_trip(tmp_path, monkeypatch):
    import json as _json

    from click.testing import CliRunner

    from gllm.cli import cli

    monkeypatch.setenv("GLLM_HOME", str(tmp_path / "home"))
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    runner = CliRunner()
    assert runner.invoke(cli, ["import", str(model), "--name", "mine"]).exit_code == 0
    listed = _json.loads(runner.invoke(cli, ["list", "--json"]).output)
    assert [e["key"] for e in listed] == ["mine"] and listed[0]["source"] == "import"
    assert "mine" in runner.invoke(cli, ["list"]).output
    assert runner.invoke(cli, ["rm", "mine"]).exit_code == 0
    assert _json.loads(runner.invoke(cli, ["list", "--json"]).output) == []
    bad = runner.invoke(cli, ["import", str(model), "--name", "../x"])
    assert bad.exit_code == 1 and "invalid model name" in bad.output
