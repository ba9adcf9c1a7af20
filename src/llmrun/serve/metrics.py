"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    """Queue depth, running rows, requests by wire and status, latency, tokens and tokens/s."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("llmrun_serve_queue_depth", "Rows waiting to join the batch", registry=r)
        self.running = Gauge("llmrun_serve_running_rows", "Rows in the decode batch", registry=r)
        self.requests = Counter(
            "llmrun_serve_requests", "Requests answered", ["wire", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "llmrun_serve_request_latency_seconds",
            "Time from a request's arrival to its answer",
            ["wire", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter("llmrun_serve_prompt_tokens", "Prompt tokens prefilled", registry=r)
        self.generated_tokens = Counter("llmrun_serve_generated_tokens", "Tokens generated", registry=r)
        self.tokens_per_second = Gauge(
            "llmrun_serve_tokens_per_second",
            "Generated tokens per second over the last few seconds",
            registry=r,
        )
        self.rejected = Counter("llmrun_serve_rejected", "Requests refused with 429 (queue full)", registry=r)
        self.cancelled = Counter(
            "llmrun_serve_cancelled_rows",
            "Rows cancelled (client gone, timeout, shutdown)",
            ["why"],
            registry=r,
        )
        self._window_start = time.monotonic()
        self._window_tokens = 0

    def add_tokens(self, n: int) -> None:
        """Count ``n`` generated tokens and refresh tokens/s (a window of about 5 seconds)."""
        self.generated_tokens.inc(n)
        self._window_tokens += n
        now = time.monotonic()
        elapsed = now - self._window_start
        if elapsed >= 5.0:
            self.tokens_per_second.set(self._window_tokens / elapsed)
            self._window_start, self._window_tokens = now, 0

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
