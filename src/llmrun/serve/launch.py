"""Running the app: :func:`run` for ``llmrun serve``, :class:`BackgroundServer` for tests and benchmarks.

Both bind a socket first (``127.0.0.1`` unless told otherwise; port 0 picks a free one) and run
uvicorn on it. uvicorn's graceful shutdown stops taking connections and lets in-flight requests
finish for ``shutdown_grace_s``; the app's lifespan then stops the scheduler, failing what is left
with 503.
"""

from __future__ import annotations

import logging
import socket
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

from llmrun.errors import ConfigurationError, DependencyError
from llmrun.serve.settings import ServeSettings

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette

    from llmrun.backends.local.engine import LocalEngine

log = logging.getLogger("llmrun.serve")


def _uvicorn() -> Any:
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise DependencyError('llmrun serve needs the serve extra: pip install "llmrun[serve]"') from None
    return uvicorn


def load_engine(model: str, settings: ServeSettings, **load_options: Any) -> LocalEngine:
    """Load ``model`` on the local backend (options as for :func:`llmrun.load`) and return its engine."""
    from llmrun.backends.local import LocalRunner
    from llmrun.registry import load

    runner = load(model, "local", max_batch_size=settings.max_batch_size, **load_options)
    if not isinstance(runner, LocalRunner):  # pragma: no cover - load("local") builds a LocalRunner
        raise ConfigurationError("llmrun serve serves the local backend only")
    return runner.engine


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when ``host`` is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: {exc}; pick another --host/--port"
        ) from None
    sock.listen(2048)
    return sock


def _server(app: Starlette, settings: ServeSettings, log_level: str) -> uvicorn.Server:
    uv = _uvicorn()
    config = uv.Config(
        app,
        log_level=log_level,
        timeout_graceful_shutdown=int(max(1, settings.shutdown_grace_s)),
        limit_concurrency=settings.max_queue + 64,  # past the queue, refuse at the door (503)
        server_header=False,
    )
    server: uvicorn.Server = uv.Server(config)
    return server


def run(model: str, settings: ServeSettings, **load_options: Any) -> None:
    """Load ``model`` and serve it in this thread until SIGINT/SIGTERM."""
    from llmrun.serve.app import create_app

    _uvicorn()
    engine = load_engine(model, settings, **load_options)
    app = create_app(engine, settings, settings.model_name or model)
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    auth = "on" if settings.api_key else "off"
    print(f"llmrun serve: {settings.model_name or model} on http://{host}:{port} (auth {auth})", flush=True)
    _server(app, settings, "info").run(sockets=[sock])


class BackgroundServer:
    """The app served by uvicorn on a thread (for tests and benchmarks)::

    with BackgroundServer(create_app(engine, settings, "m"), settings) as server:
        requests.get(server.url + "/health")
    """

    def __init__(self, app: Starlette, settings: ServeSettings, log_level: str = "warning") -> None:
        self.app = app
        self.settings = settings
        self._sock = bind(settings.host, settings.port)
        host, port = self._sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self._server = _server(app, settings, log_level)
        self._thread = threading.Thread(target=self._run, name="llmrun-serve-http", daemon=True)

    def _run(self) -> None:
        self._server.run(sockets=[self._sock])

    def start(self, timeout_s: float = 30.0) -> BackgroundServer:
        """Start serving; returns once the server accepts requests."""
        self._thread.start()
        done = threading.Event()
        while not self._server.started and self._thread.is_alive():
            done.wait(0.02)
        if not self._server.started:
            raise ConfigurationError("the server did not start; see the log above")
        return self

    def stop(self) -> None:
        """Shut down gracefully (in-flight requests finish within the grace period)."""
        self._server.should_exit = True
        self._thread.join(timeout=self.settings.shutdown_grace_s + 30)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
