"""A fake OpenAI-compatible server on 127.0.0.1, for offline tests of the ``openai`` backend.

A real HTTP server (so the real ``openai`` client talks to it) with ``GET
/v1/models``, ``POST /v1/completions`` and ``POST /v1/chat/completions``, streamed
(server-sent events) or not. It plays one server at a time, ``profile``: it lists its
models with that server's ``owned_by`` and reads the JSON schema only where that server
reads it (as each documents its request: vLLM ``structured_outputs``/``guided_json``,
llama.cpp ``response_format`` json_object + ``schema`` or ``json_schema``, SGLang
``json_schema`` strings, Ollama ``response_format`` on chat only, the others
``response_format`` json_schema), so a request shaped for another server gets free text
back, as from the real one. A found schema is answered with a schema-valid object
(seeded by the prompt, so replies are deterministic); ``ignore_schema=True`` plays a
server that does not enforce it: the first answer is prose around JSON of the wrong
types, and, with ``heeds_feedback``, a valid object once the prompt carries llmrun's
"is not valid" feedback. ``reject_schema=True`` answers any schema with 400.

Faults, recording and the key check are :class:`~llmrun.testing.fake_http.FakeHTTPServer`'s
(``fail(503, retry_after=...)``, ``inject(Fault.stall())``, ``requests_to(...)``); a
wrong key gets 401 and an unknown model 404, in OpenAI's error format::

    with FakeOpenAIServer(profile="vllm", models={"m"}) as server:
        runner = llmrun.load("m", backend="openai", base_url=server.base_url, api_key="test-key")
        server.fail(429, "slow down", retry_after=0.01)   # the next request only; llmrun retries it
        answer = runner(question, output_type=Answer)

pytest fixtures, in :mod:`llmrun.testing.fixtures`: ``fake_openai_server`` (one per test
module), ``fake_openai`` (that server, reset before the test) and ``fake_openai_env``
(plus ``LLMRUN_BACKEND``/``LLMRUN_BASE_URL``/``LLMRUN_API_KEY`` set to it).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler
from typing import Any

from llmrun.testing.fake_http import FakeHTTPServer, Fault, RecordedRequest, send, send_raw
from llmrun.testing.sample import sample_value

__all__ = ["OWNERS", "FakeOpenAIServer", "Fault", "RecordedRequest"]

#: ``owned_by`` in ``GET /v1/models`` of each server the fake can play.
OWNERS = {
    "generic": "organization-owner",
    "openai": "openai",
    "vllm": "vllm",
    "vllm_legacy": "vllm",
    "sglang": "sglang",
    "llamacpp": "llamacpp",
    "ollama": "library",
    "lamini_inf": "lamini",
    "llmrun": "llmrun",
}
#: What ``GET /version`` (at the root) answers when the fake plays vLLM.
VLLM_VERSIONS = {"vllm": "0.11.0", "vllm_legacy": "0.9.2"}
#: Text the backend puts in a prompt when it asks again after a reply that failed validation.
FEEDBACK_MARK = "is not valid"

Responder = Callable[[str, "dict[str, Any] | None"], str]
_WORDS = ("the", "server", "says", "hello", "world", "and", "answers", "in", "kind", "today")


class FakeOpenAIServer(FakeHTTPServer):
    """The fake OpenAI-compatible server. See the module docstring."""

    server_name = "FakeOpenAI"

    def __init__(
        self,
        api_key: str | None = "test-key",
        *,
        profile: str = "generic",
        models: Iterable[str] = ("fake-model",),
        ignore_schema: bool = False,
        heeds_feedback: bool = True,
        reject_schema: bool = False,
        latency_s: float = 0.0,
        max_stall_s: float = 30.0,
        idle_timeout_s: float = 600.0,
    ) -> None:
        super().__init__(api_key, max_stall_s=max_stall_s, idle_timeout_s=idle_timeout_s)
        if profile not in OWNERS:
            raise ValueError(f"profile must be one of {', '.join(OWNERS)}, got {profile!r}")
        self.profile = profile
        self.models = set(models)
        self.ignore_schema = ignore_schema
        self.heeds_feedback = heeds_feedback
        self.reject_schema = reject_schema
        self.latency_s = latency_s
        #: False plays a server without ``GET /v1/models`` (it answers 404).
        self.lists_models = True
        #: Fallback for text prompts without a script: ``f(prompt, schema) -> reply text``.
        self.responder: Responder | None = None
        self._scripts: dict[str, str] = {}
        self._script_lock = threading.Lock()

    # ----------------------------------------------------------------- set-up
    @property
    def base_url(self) -> str:
        """What to give the backend as ``base_url``: ``<url>/v1``."""
        return self.url + "/v1"

    def env(self) -> dict[str, str]:
        """Environment variables that point ``llmrun.load(backend="openai")`` at this server."""
        return {
            "LLMRUN_BACKEND": "openai",
            "LLMRUN_BASE_URL": self.base_url,
            "LLMRUN_API_KEY": self.api_key or "any-key",
        }

    def script(self, prompt: str, reply: str) -> None:
        """Answer ``prompt`` (the completions prompt, or the last user message) with ``reply``."""
        with self._script_lock:
            self._scripts[prompt] = reply

    def reset(self) -> None:
        """Forget requests, faults and scripts; the schema behaviour back to enforcing."""
        super().reset()
        with self._script_lock:
            self._scripts.clear()
        self.responder = None
        self.ignore_schema = False
        self.heeds_feedback = True
        self.reject_schema = False
        self.lists_models = True
        self.latency_s = 0.0

    def error_body(self, status: int, detail: str) -> Any:
        kinds = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}
        return {"error": {"message": detail, "type": kinds.get(status, "server_error"), "code": status}}

    # ----------------------------------------------------------------- serving
    def respond(
        self, h: BaseHTTPRequestHandler, rec: RecordedRequest, raw: bytes, fault: Fault | None
    ) -> None:
        if not self.authorised(rec):
            send(h, 401, self.error_body(401, "Incorrect API key provided."))
            return
        route = (rec.method, rec.path)
        if route == ("GET", "/version") and self.profile in VLLM_VERSIONS:
            send(h, 200, {"version": VLLM_VERSIONS[self.profile]})
            return
        if route == ("GET", "/v1/models") and self.lists_models:
            owner = OWNERS[self.profile]
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": owner} for m in sorted(self.models)
            ]
            send(h, 200, {"object": "list", "data": data})
            return
        if route not in (("POST", "/v1/completions"), ("POST", "/v1/chat/completions")):
            send(h, 404, self.error_body(404, f"{rec.method} {rec.path} not found"))
            return
        body = rec.body
        if not isinstance(body, dict):
            send(h, 400, self.error_body(400, "the request body must be a JSON object"))
            return
        if body.get("model") not in self.models:
            send(h, 404, self.error_body(404, f"The model `{body.get('model')}` does not exist."))
            return
        chat = rec.path.endswith("/chat/completions")
        try:
            schema = self.schema_in(body, chat)
        except ValueError as bad:
            send(h, 400, self.error_body(400, str(bad)))
            return
        if schema is not None and self.reject_schema:
            send(h, 400, self.error_body(400, "this server cannot compile the given JSON schema"))
            return
        prompts = self._prompts(body, chat)
        with self.counting():
            if self.latency_s:
                self.wait(self.latency_s)
            texts = [self._answer(p, schema, body) for p in prompts]
        if fault is not None and fault.kind == "lost_reply":
            send(h, fault.status, self.error_body(fault.status, fault.detail))
            return
        if body.get("stream"):
            self._stream(h, texts[0], chat, body)
            return
        send(h, 200, _reply(texts, chat, body, prompts))

    def schema_in(self, body: dict[str, Any], chat: bool) -> dict[str, Any] | None:
        """The JSON schema the played server reads from ``body`` (None: none where it looks)."""
        fmt = body.get("response_format")
        fmt = fmt if isinstance(fmt, dict) else {}
        found: Any = None
        if self.profile in ("vllm",):
            found = (body.get("structured_outputs") or {}).get("json")
        elif self.profile == "vllm_legacy":
            found = body.get("guided_json")
        elif self.profile == "llamacpp":
            if chat and fmt.get("type") == "json_object":
                found = fmt.get("schema")
            elif not chat:
                found = body.get("json_schema")
        elif self.profile == "sglang" and not chat:
            text = body.get("json_schema")
            found = json.loads(text) if isinstance(text, str) else None
        elif self.profile == "ollama" and not chat:
            found = None  # Ollama's /v1/completions takes no schema
        elif fmt.get("type") == "json_schema":
            found = (fmt.get("json_schema") or {}).get("schema")
        if found is not None and not isinstance(found, dict):
            raise ValueError(f"the JSON schema must be an object, got {type(found).__name__}")
        return found

    def _prompts(self, body: dict[str, Any], chat: bool) -> list[str]:
        if chat:
            messages = body.get("messages") or []
            return ["\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))]
        prompt = body.get("prompt", "")
        return [str(p) for p in prompt] if isinstance(prompt, list) else [str(prompt)]

    def _answer(self, prompt: str, schema: dict[str, Any] | None, body: dict[str, Any]) -> str:
        with self._script_lock:
            scripted = self._scripts.get(prompt) or self._scripts.get(_first_user_message(body))
        if scripted is not None:
            return scripted
        seed = _first_user_message(body) or prompt.split("\n\nThat reply", 1)[0]
        rng = random.Random(hashlib.sha256(seed.encode()).digest())
        if schema is not None:
            valid = json.dumps(sample_value(schema, rng))
            if not self.ignore_schema or (self.heeds_feedback and FEEDBACK_MARK in prompt):
                return valid
            return "Sure! Here is the answer:\n" + json.dumps(_wrong_types(json.loads(valid)))
        if self.responder is not None:
            return self.responder(prompt, None)
        count = max(1, min(int(body.get("max_tokens") or 16), 12))
        text = " " + " ".join(rng.choice(_WORDS) for _ in range(count))
        stops = body.get("stop") or []
        for stop in [stops] if isinstance(stops, str) else stops:
            if isinstance(stop, str) and stop and stop in text:
                text = text[: text.index(stop)]
        return text

    def _stream(self, h: BaseHTTPRequestHandler, text: str, chat: bool, body: dict[str, Any]) -> None:
        pieces = [text[i : i + 5] for i in range(0, len(text), 5)] or [""]
        events = []
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            if chat:
                choice: dict[str, Any] = {"index": 0, "delta": {"content": piece}}
                kind = "chat.completion.chunk"
            else:
                choice, kind = {"index": 0, "text": piece}, "text_completion"
            choice["finish_reason"] = "stop" if last else None
            chunk = {
                "id": "fake-1",
                "object": kind,
                "created": 0,
                "model": body.get("model"),
                "choices": [choice],
            }
            events.append(f"data: {json.dumps(chunk)}\n\n")
        events.append("data: [DONE]\n\n")
        data = "".join(events).encode()
        send_raw(h, 200, data, {"Content-Type": "text/event-stream"})


def _reply(texts: list[str], chat: bool, body: dict[str, Any], prompts: list[str]) -> dict[str, Any]:
    usage = {
        "prompt_tokens": sum(len(p.split()) for p in prompts),
        "completion_tokens": sum(len(t.split()) for t in texts),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if chat:
        choices = [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
            for i, t in enumerate(texts)
        ]
        kind = "chat.completion"
    else:
        choices = [
            {"index": i, "text": t, "finish_reason": "stop", "logprobs": None} for i, t in enumerate(texts)
        ]
        kind = "text_completion"
    return {
        "id": "fake-1",
        "object": kind,
        "created": 0,
        "model": body.get("model"),
        "choices": choices,
        "usage": usage,
    }


def _first_user_message(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return str(users[0].get("content", "")) if users else ""


def _wrong_types(value: Any) -> Any:
    """``value`` with every leaf of the wrong JSON type: what a server that ignores the schema sends."""
    if isinstance(value, dict):
        return {k: _wrong_types(v) for k, v in value.items()} or {"unexpected": True}
    if isinstance(value, list):
        return {"items": [_wrong_types(v) for v in value]}
    if isinstance(value, str):
        return [value]
    return str(value) + " (approximately)"
