import json
import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from gllm.cli import cli
from gllm_core.hookspecs import hookimpl
from gllm_core.plugins import PluginHost, get_host
from gllm_core.registry import Alias


def _write_dist(root, dist, version, entry, module, source):
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[gllm]\n{entry} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def plugin_path(tmp_path):
    """Installed-looking plugins on a path: one that fails to import, one whose hook raises, one good."""
    _write_dist(tmp_path, "gllm-broken-import", "0.1", "broken_import", "broken_import_plugin",
                "raise RuntimeError('this plugin is broken on purpose')\n")
    _write_dist(tmp_path, "gllm-broken-hook", "0.2", "broken_hook", "broken_hook_plugin", """
        from gllm_core import hookimpl
        @hookimpl
        def register_aliases(register):
            raise ValueError('registration exploded')
        """)
    _write_dist(tmp_path, "gllm-good-extra", "1.2.3", "good_extra", "good_extra_plugin", """
        from gllm_core import hookimpl
        from gllm_core.registry import Alias
        @hookimpl
        def register_aliases(register):
            register(Alias(name="good:alias", repo="org/good-model"))
        """)
    return tmp_path


def _run(args, path, **env):
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")]), **env)
    return subprocess.run([sys.executable, "-m", "gllm", *args], capture_output=True, text=True, env=full_env,
                          timeout=300)


def test_installed_entry_points_are_discovered_and_broken_ones_reported(plugin_path, minilm):
    result = _run(["plugins", "--json"], plugin_path)
    assert result.returncode == 0, result.stderr
    infos = {p["name"]: p for p in json.loads(result.stdout)}
    assert infos["bert"]["version"] == "0.1.0" and "register_architectures" in infos["bert"]["hooks"]
    assert infos["good_extra"]["version"] == "1.2.3" and infos["good_extra"]["errors"] == []
    assert "broken on purpose" in infos["broken_import"]["errors"][0]
    assert "registration exploded" in infos["broken_hook"]["errors"][0]
    assert infos["numpy_backend"]["builtin"] is True
    # the broken plugins do not stop the host from embedding
    result = _run(["embed", "all-minilm:l6", "hello world", "--json"], plugin_path)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["data"][0]["embedding"]) == 384


def test_load_plugins_allowlist(plugin_path):
    host = None
    old = os.environ.get("GLLM_LOAD_PLUGINS")
    sys.path.insert(0, str(plugin_path))
    try:
        os.environ["GLLM_LOAD_PLUGINS"] = "good_extra"
        host = PluginHost()
        assert "good_extra" in host.infos and "bert" not in host.infos and "broken_import" not in host.infos
        assert "good:alias" in host.registry.aliases and "all-minilm:l6" not in host.registry.aliases
        os.environ["GLLM_LOAD_PLUGINS"] = "gllm-arch-bert"  # distribution names work too
        assert set(PluginHost().infos) >= {"bert"} and "good_extra" not in PluginHost().infos
        os.environ["GLLM_LOAD_PLUGINS"] = ""
        assert not [i for i in PluginHost().infos.values() if not i.builtin]
    finally:
        sys.path.remove(str(plugin_path))
        if old is None:
            os.environ.pop("GLLM_LOAD_PLUGINS", None)
        else:
            os.environ["GLLM_LOAD_PLUGINS"] = old


def test_allowlist_without_bert_gives_clear_error(minilm):
    env = dict(os.environ, GLLM_LOAD_PLUGINS="")
    result = subprocess.run([sys.executable, "-m", "gllm", "embed", "sentence-transformers/all-MiniLM-L6-v2", "x"], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 1
    assert "no installed plugin serves architecture BertModel" in result.stderr
    assert "Traceback" not in result.stderr


class _TestPlugin:
    __name__ = "test-plugin"

    @hookimpl
    def register_aliases(self, register):
        register(Alias(name="test:tiny", repo="org/tiny"))


def test_registered_plugin_shows_in_cli_and_registry():
    host = get_host()
    host.register(_TestPlugin(), "test-plugin")
    try:
        assert host.registry.aliases["test:tiny"].repo == "org/tiny"
        out = CliRunner().invoke(cli, ["plugins", "--json"])
        assert out.exit_code == 0
        names = {p["name"]: p for p in json.loads(out.output)}
        assert names["test-plugin"]["hooks"] == ["register_aliases"]
        text = CliRunner().invoke(cli, ["plugins"]).output
        assert "test-plugin" in text
    finally:
        host.unregister("test-plugin")
    assert "test:tiny" not in host.registry.aliases


class _BadRegistration:
    @hookimpl
    def register_aliases(self, register):
        register(Alias(name="ok:first", repo="org/first"))
        register("not an alias")


def test_invalid_registration_is_reported_and_rolled_back():
    host = get_host()
    host.register(_BadRegistration(), "bad-registration")
    try:
        assert "ok:first" not in host.registry.aliases  # the plugin's registrations are all or nothing
        info = {i.name: i for i in host.plugin_list()}["bad-registration"]
        assert "expects Alias objects" in info.errors[0]
        assert "all-minilm:l6" in host.registry.aliases
    finally:
        host.unregister("bad-registration")


def test_backends_command_shows_auto_choice():
    out = CliRunner().invoke(cli, ["backends", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["auto"] in {b["name"] for b in data["backends"] if b["available"]}
    assert any(b["name"] == "numpy" and b["priority"] == 100 for b in data["backends"])
    text = CliRunner().invoke(cli, ["backends"]).output
    assert "auto →" in text and "numpy" in text
