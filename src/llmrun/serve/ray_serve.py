"""``llmrun serve MODEL --replicas N``: the same ASGI app on Ray Serve, each replica owning an engine.

Every replica loads the model once (:func:`~llmrun.serve.launch.load_engine`) and serves
:func:`~llmrun.serve.create_app` over it: the Lamini and OpenAI wires, auth, the bounded queue
and metrics are the single-process server's, per replica. Ray Serve's proxy listens on the host
and port of the :class:`~llmrun.serve.ServeSettings` and routes each request to a replica;
every answer says which replica it came from in the ``x-llmrun-replica`` header. Autoscaling
settings (Ray Serve's ``autoscaling_config``: ``min_replicas``, ``max_replicas``,
``target_ongoing_requests``, ...) are passed through as they are.

As a library: :func:`build_application` returns the Ray Serve application to ``serve.run``
yourself (e.g. from a Serve config file's import path); :func:`serve_replicated` is the command.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from llmrun.errors import ConfigurationError, DependencyError
from llmrun.serve.settings import ServeSettings

__all__ = ["REPLICA_HEADER", "build_application", "check_autoscaling", "serve_replicated"]

#: The response header that names the replica that answered.
REPLICA_HEADER = "x-llmrun-replica"


def _serve() -> Any:
    try:
        from ray import serve
    except ImportError:
        raise DependencyError('--replicas needs Ray Serve: pip install "llmrun[serve,ray]"') from None
    return serve


class _Replica:
    """One replica: an engine, loaded once, behind the app (built by Ray Serve after ``__init__``)."""

    def __init__(
        self, model: str, settings: ServeSettings, load_options: dict[str, Any], threads: int | None
    ) -> None:
        from llmrun.serve.launch import load_engine

        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        self.model = model
        self.settings = settings
        self.engine = load_engine(model, settings, **load_options)

    def __serve_build_asgi_app__(self) -> Any:
        from ray import serve

        from llmrun.serve.app import create_app

        app = create_app(self.engine, self.settings, self.settings.model_name or self.model)
        return _NameReplica(app, serve.get_replica_context().replica_id.unique_id)


class _NameReplica:
    """ASGI middleware: add the :data:`REPLICA_HEADER` to every HTTP response."""

    def __init__(self, app: Any, replica: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def named(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, named)


def check_autoscaling(autoscaling: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Ray Serve's ``autoscaling_config`` checked by Ray's own model (:class:`ConfigurationError` if not)."""
    if autoscaling is None:
        return None
    if not isinstance(autoscaling, Mapping):
        raise ConfigurationError(
            "autoscaling must be a mapping such as {'min_replicas': 1, 'max_replicas': 4}, "
            f"got {autoscaling!r}"
        )
    _serve()
    from ray.serve.config import AutoscalingConfig

    try:
        AutoscalingConfig(**autoscaling)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"invalid autoscaling settings {dict(autoscaling)!r}: {exc}") from None
    return dict(autoscaling)


def build_application(
    model: str,
    settings: ServeSettings,
    *,
    replicas: int = 1,
    autoscaling: Mapping[str, Any] | None = None,
    cpus_per_replica: float = 1,
    gpus_per_replica: float = 0,
    threads_per_replica: int | None = None,
    **load_options: Any,
) -> Any:
    """The Ray Serve application: ``replicas`` copies (or ``autoscaling``) of the app, one engine each."""
    serve = _serve()
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ConfigurationError(f"replicas={replicas!r} is invalid: use a positive integer")
    for name, value in (("cpus_per_replica", cpus_per_replica), ("gpus_per_replica", gpus_per_replica)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigurationError(f"{name}={value!r} is invalid: use a number >= 0")
    scaling = check_autoscaling(autoscaling)
    options: dict[str, Any] = {
        "name": "llmrun",
        "ray_actor_options": {"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
        # past the app's own queue it answers 429 itself; Ray must not hold requests back first
        "max_ongoing_requests": settings.max_queue + 64,
    }
    if scaling is not None:
        options["autoscaling_config"] = scaling
    else:
        options["num_replicas"] = replicas
    threads = threads_per_replica
    if threads is None and gpus_per_replica == 0 and cpus_per_replica >= 1:
        threads = int(cpus_per_replica)
    deployment = serve.deployment(**options)(serve.ingress()(_Replica))
    return deployment.bind(model, settings, dict(load_options), threads)


def serve_replicated(
    model: str,
    settings: ServeSettings,
    *,
    address: str | None = None,
    stop: threading.Event | None = None,
    **options: Any,
) -> None:
    """Serve on Ray Serve until Ctrl-C (or ``stop`` is set), then shut the deployment down.

    ``address``: a running Ray cluster (``host:port``, ``auto``), else a new local one.
    Other options are :func:`build_application`'s.
    """
    from llmrun.batch.ray_exec import RayCluster

    serve = _serve()
    if settings.port == 0:
        raise ConfigurationError("Ray Serve needs a fixed port: pass --port N (not 0)")
    application = build_application(model, settings, **options)  # checked before Ray starts
    with RayCluster(address):
        serve.start(http_options={"host": settings.host, "port": settings.port})
        try:
            serve.run(application, name="llmrun", route_prefix="/")
            print(
                f"llmrun serve: {settings.model_name or model} on http://{settings.host}:{settings.port} "
                f"(Ray Serve, auth {'on' if settings.api_key else 'off'})",
                flush=True,
            )
            (stop or threading.Event()).wait()
        except KeyboardInterrupt:
            pass
        finally:
            serve.shutdown()
