import pytest

import gllm
from gllm_core.backends.numpy_backend import NumpyBackend
from gllm_core.hookspecs import hookimpl
from gllm_core.plugins import get_host
from gllm_core.registry import BackendProbe, BackendSpec
from gllm_core.selection import backend_statuses, choose_backend
from gllm_core.testing import conformance_cases


@pytest.mark.parametrize("case", conformance_cases(), ids=str)
def test_numpy_backend_conforms(case):
    case.check(NumpyBackend())


class _FakeBackends:
    @hookimpl
    def register_backends(self, register):
        register(BackendSpec(name="fast", probe=lambda: BackendProbe(True, 500, "test"),
                             create=lambda **o: NumpyBackend()))
        register(BackendSpec(name="absent", probe=lambda: BackendProbe(False, 900, "no device here"),
                             create=lambda **o: NumpyBackend()))
        register(BackendSpec(name="broken", probe=lambda: 1 / 0, create=lambda **o: NumpyBackend()))


@pytest.fixture
def fake_backends():
    host = get_host()
    host.register(_FakeBackends(), "fake-backends")
    try:
        yield host.registry
    finally:
        host.unregister("fake-backends")


def test_auto_picks_highest_available(fake_backends, monkeypatch):
    monkeypatch.delenv("GLLM_BACKEND", raising=False)
    assert choose_backend(fake_backends, "auto") == "fast"
    statuses = {s.name: s for s in backend_statuses(fake_backends)}
    assert not statuses["absent"].available and not statuses["broken"].available
    assert "ZeroDivisionError" in statuses["broken"].detail


def test_env_var_and_explicit_names(fake_backends, monkeypatch):
    monkeypatch.setenv("GLLM_BACKEND", "numpy")
    assert choose_backend(fake_backends, "auto") == "numpy"
    assert choose_backend(fake_backends, "fast") == "fast"


def test_missing_and_unavailable_backends_are_clear_errors(fake_backends):
    with pytest.raises(gllm.BackendUnavailableError, match="no backend named 'nope'.*installed: "):
        choose_backend(fake_backends, "nope")
    with pytest.raises(gllm.BackendUnavailableError, match="'absent' is installed but not available.*no device"):
        choose_backend(fake_backends, "absent")
    with pytest.raises(gllm.BackendUnavailableError):
        gllm.Client(backend="nope")


def test_a_named_backend_is_the_only_one_probed(monkeypatch):
    probed = []

    def spy(name, available):
        return BackendSpec(name=name, probe=lambda: probed.append(name) or BackendProbe(available, 500, "spy"),
                           create=lambda **o: NumpyBackend())

    class _Spies:
        @hookimpl
        def register_backends(self, register):
            for name, available in (("spy-a", True), ("spy-b", False), ("spy-c", True)):
                register(spy(name, available))

    host = get_host()
    host.register(_Spies(), "spy-backends")
    try:
        registry = host.registry
        monkeypatch.setenv("GLLM_BACKEND", "spy-a")
        assert choose_backend(registry, "auto") == "spy-a" and probed == ["spy-a"]
        with pytest.raises(gllm.BackendUnavailableError, match="'spy-b' is installed but not available.*spy"):
            choose_backend(registry, "spy-b")
        assert probed == ["spy-a", "spy-b"]
        with pytest.raises(gllm.BackendUnavailableError, match="no backend named 'nope'.*installed: .*spy-a, spy-b, spy-c"):
            choose_backend(registry, "nope")
        assert probed == ["spy-a", "spy-b"]
        monkeypatch.delenv("GLLM_BACKEND")
        choose_backend(registry, "auto")
        assert sorted(probed[2:]) == ["spy-a", "spy-b", "spy-c"]  # auto probes every backend
    finally:
        host.unregister("spy-backends")


def test_client_default_backend_is_available():
    client = gllm.Client()
    assert client.backend_name in {s.name for s in backend_statuses(get_host().registry) if s.available}
