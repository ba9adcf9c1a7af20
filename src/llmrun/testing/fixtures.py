"""pytest plugin: tiny offline checkpoints, an offline Hugging Face cache, fake servers and a network guard.

Enable it in a ``conftest.py`` at the root of your tests::

    pytest_plugins = ["llmrun.testing.fixtures"]

Fixtures:

- ``tiny_checkpoint_dirs`` (session): ``{"gpt_neox": Path, "llama": Path}``, tiny checkpoints with
  trained tokenizers, built once per session; ``tiny_gpt_neox_dir`` / ``tiny_llama_dir`` for one.
- ``tiny_hf_cache`` (session): a :class:`TinyHFCache` with both installed in a hub-cache layout.
- ``offline_hf_cache`` (function): the same cache, made *the* cache for one test with
  ``HF_HUB_OFFLINE=1`` (env vars for subprocesses, ``huggingface_hub.constants`` in-process).
- ``fake_lamini_server`` / ``fake_lamini`` / ``fake_lamini_env``: the fake Lamini API
  (:mod:`llmrun.testing.lamini_server`); ``fake_openai_server`` / ``fake_openai`` /
  ``fake_openai_env``: the fake OpenAI-compatible server (:mod:`llmrun.testing.openai_server`).
- ``no_network`` (function): connections to anything but loopback fail with :class:`NetworkBlockedError`.
  Set ``llmrun_no_network = true`` in the ``[tool.pytest.ini_options]`` table to guard every test.
- ``llmrun_cassette`` (function): a :class:`~llmrun.testing.cassette.Cassette` active for the test, at
  ``<test dir>/cassettes/<module>/<test>.jsonl`` (``<Class>-<test>`` in a class); the marker
  ``@pytest.mark.llmrun_cassette(path=None, mode=None)`` turns it on for a test and may name the file
  (relative to the test's folder). The mode is
  ``--llmrun-cassette-mode`` > the marker's > the ini option ``llmrun_cassette_mode`` (default ``replay``).
- ``llmrun_override`` (function): ``llmrun_override(target, backend=None)`` swaps what ``llmrun.load``
  and the facades build until the test ends (see :func:`llmrun.testing.override`).

Importing this module is cheap; torch and transformers load when a checkpoint fixture is first used.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from llmrun.runner import ModelRunner
from llmrun.testing.cassette import Cassette, CassetteMode
from llmrun.testing.checkpoints import TINY_REPO_IDS, Family, build_tiny_checkpoint, install_in_hf_cache
from llmrun.testing.lamini_server import FakeLaminiServer
from llmrun.testing.lamini_wire import DEFAULT_JOB_PLAN
from llmrun.testing.openai_server import FakeOpenAIServer
from llmrun.testing.override import RunnerSpec, override

__all__ = [
    "NetworkBlockedError",
    "TinyHFCache",
    "block_network",
    "fake_openai",
    "fake_openai_env",
    "fake_openai_server",
    "llmrun_cassette",
    "llmrun_override",
    "no_network",
    "offline_hf_cache",
    "tiny_checkpoint_dirs",
    "tiny_gpt_neox_dir",
    "tiny_hf_cache",
    "tiny_llama_dir",
]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class TinyHFCache(NamedTuple):
    """A Hugging Face hub cache folder holding the tiny checkpoints, and their repo ids by family."""

    cache_dir: Path
    repo_ids: dict[Family, str]


class NetworkBlockedError(ConnectionRefusedError):
    """A test tried to reach a non-loopback address while the network guard was on."""


def _is_loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


@contextlib.contextmanager
def block_network() -> Iterator[None]:
    """Make socket connects (and name lookups) to anything but loopback raise :class:`NetworkBlockedError`.

    Patches ``socket.socket.connect``/``connect_ex`` (used by ``create_connection``, asyncio, httpx,
    aiohttp, requests) and ``socket.getaddrinfo`` (so no DNS query leaves either). Unix sockets and
    127.0.0.0/8, ``::1`` and ``localhost`` stay allowed, so local test servers keep working.
    """
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise NetworkBlockedError(
                f"network access blocked in tests: connect to {address!r}; only loopback is allowed "
                "(use a local fake server, or drop the no_network guard for this test)"
            )

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode(errors="replace") if isinstance(host, bytes) else host
        if name is not None and not _is_loopback(name) and not _is_ip_literal(str(name)):
            raise NetworkBlockedError(f"network access blocked in tests: name lookup of {name!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = getaddrinfo
    try:
        yield
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = real_connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = real_getaddrinfo


# --------------------------------------------------------------------------- pytest hooks and fixtures


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "llmrun_no_network",
        type="bool",
        default=False,
        help="llmrun: block connections to non-loopback addresses in every test",
    )
    parser.addini(
        "llmrun_cassette_mode",
        default="replay",
        help="llmrun: the mode of llmrun_cassette (record, replay or auto); default replay",
    )
    parser.addoption(
        "--llmrun-cassette-mode",
        choices=("record", "replay", "auto"),
        default=None,
        help="llmrun: record, replay or auto for every llmrun_cassette (beats markers and the ini option)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "llmrun_cassette(path=None, mode=None): record/replay this test's llmrun completions in a cassette",
    )


@pytest.fixture(autouse=True)
def _llmrun_network_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Apply :func:`block_network` to every test when the ``llmrun_no_network`` ini option is true."""
    if request.config.getini("llmrun_no_network"):
        with block_network():
            yield
    else:
        yield


@pytest.fixture
def no_network() -> Iterator[None]:
    """Within the test, connecting to anything but loopback raises :class:`NetworkBlockedError`."""
    with block_network():
        yield


@pytest.fixture(scope="session")
def tiny_checkpoint_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[Family, Path]:
    """Tiny GPTNeoX and Llama checkpoints (seed 0) with tokenizers trained on the spot, by family."""
    root = tmp_path_factory.mktemp("llmrun-tiny-checkpoints")
    return {family: build_tiny_checkpoint(root / family, family, seed=0) for family in TINY_REPO_IDS}


@pytest.fixture(scope="session")
def tiny_gpt_neox_dir(tiny_checkpoint_dirs: dict[Family, Path]) -> Path:
    """The tiny GPTNeoX (pythia-like) checkpoint folder."""
    return tiny_checkpoint_dirs["gpt_neox"]


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_checkpoint_dirs: dict[Family, Path]) -> Path:
    """The tiny Llama checkpoint folder."""
    return tiny_checkpoint_dirs["llama"]


@pytest.fixture(scope="session")
def tiny_hf_cache(
    tiny_checkpoint_dirs: dict[Family, Path], tmp_path_factory: pytest.TempPathFactory
) -> TinyHFCache:
    """Both tiny checkpoints installed in a hub-cache layout under ``TINY_REPO_IDS``; not yet activated."""
    cache_dir = tmp_path_factory.mktemp("llmrun-hf-cache")
    for family, folder in tiny_checkpoint_dirs.items():
        install_in_hf_cache(folder, TINY_REPO_IDS[family], cache_dir)
    return TinyHFCache(cache_dir, dict(TINY_REPO_IDS))


@pytest.fixture
def offline_hf_cache(tiny_hf_cache: TinyHFCache, monkeypatch: pytest.MonkeyPatch) -> TinyHFCache:
    """Make ``tiny_hf_cache`` the Hugging Face cache for this test, with ``HF_HUB_OFFLINE=1``.

    Sets the env vars (seen by subprocesses) and ``huggingface_hub.constants`` (seen in-process,
    where the env was already read at import). Everything is restored after the test.
    """
    import huggingface_hub.constants as hf_constants

    cache = str(tiny_hf_cache.cache_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", cache)
    return tiny_hf_cache


# ---------------------------------------------------------------- fake Lamini server
@pytest.fixture(scope="module")
def fake_lamini_server() -> Iterator[FakeLaminiServer]:
    """A :class:`FakeLaminiServer` (key ``"test-key"``) shared by the tests of a module."""
    with FakeLaminiServer() as server:
        yield server


@pytest.fixture
def fake_lamini(fake_lamini_server: FakeLaminiServer) -> Iterator[FakeLaminiServer]:
    """The module's fake server with a clean slate: no requests, scripts, faults, data or jobs."""
    fake_lamini_server.reset()
    fake_lamini_server.latency_s = 0.0
    fake_lamini_server.responder = None
    fake_lamini_server.job_plan = DEFAULT_JOB_PLAN
    yield fake_lamini_server
    fake_lamini_server.reset()


@pytest.fixture
def fake_lamini_env(fake_lamini: FakeLaminiServer, monkeypatch: pytest.MonkeyPatch) -> FakeLaminiServer:
    """:func:`fake_lamini`, with ``LAMINI_API_URL``/``LAMINI_API_KEY`` pointing at it."""
    for name, value in fake_lamini.env().items():
        monkeypatch.setenv(name, value)
    return fake_lamini


# ---------------------------------------------------------------- fake OpenAI-compatible server
@pytest.fixture(scope="module")
def fake_openai_server() -> Iterator[FakeOpenAIServer]:
    """A :class:`FakeOpenAIServer` (key ``"test-key"``, model ``"fake-model"``, profile ``generic``)
    shared by the tests of a module."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def fake_openai(fake_openai_server: FakeOpenAIServer) -> Iterator[FakeOpenAIServer]:
    """The module's fake OpenAI-compatible server with a clean slate (requests, faults, scripts)."""
    fake_openai_server.reset()
    fake_openai_server.profile = "generic"
    fake_openai_server.models = {"fake-model"}
    yield fake_openai_server
    fake_openai_server.reset()


@pytest.fixture
def fake_openai_env(fake_openai: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAIServer:
    """:func:`fake_openai`, with ``LLMRUN_BACKEND=openai``, ``LLMRUN_BASE_URL`` and ``LLMRUN_API_KEY`` set."""
    for name, value in fake_openai.env().items():
        monkeypatch.setenv(name, value)
    return fake_openai


# ---------------------------------------------------------------- cassettes and overrides
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@pytest.fixture
def llmrun_cassette(request: pytest.FixtureRequest) -> Iterator[Cassette]:
    """A cassette active for the test: runners built through ``llmrun.load`` record or replay through it."""
    marker = request.node.get_closest_marker("llmrun_cassette")
    args = dict(marker.kwargs) if marker else {}
    if marker and marker.args:
        args.setdefault("path", marker.args[0])
    folder = Path(request.node.path).parent
    test_name = request.node.nodeid.split("::", 1)[-1]  # Class::test[param]: unique in its module
    path = args.get("path") or Path("cassettes") / request.node.path.stem / (
        _UNSAFE_NAME.sub("-", test_name).strip("-") + ".jsonl"
    )
    mode: CassetteMode = (
        request.config.getoption("--llmrun-cassette-mode")
        or args.get("mode")
        or request.config.getini("llmrun_cassette_mode")
    )
    with Cassette(folder / path, mode) as tape:
        yield tape


@pytest.fixture(autouse=True)
def _llmrun_cassette_marker(request: pytest.FixtureRequest) -> None:
    """Turn on ``llmrun_cassette`` for tests marked ``@pytest.mark.llmrun_cassette``."""
    if request.node.get_closest_marker("llmrun_cassette") is not None:
        request.getfixturevalue("llmrun_cassette")


@pytest.fixture
def llmrun_override() -> Iterator[Callable[..., override]]:
    """``llmrun_override(target, backend=None)``: swap what the registry builds until the test ends."""
    active: list[override] = []

    def use(
        target: ModelRunner | type[ModelRunner] | Callable[[RunnerSpec], ModelRunner],
        backend: str | None = None,
    ) -> override:
        swap = override(target, backend=backend)
        swap.__enter__()
        active.append(swap)
        return swap

    yield use
    for swap in reversed(active):
        swap.__exit__(None, None, None)
