"""``llmrun serve --replicas 2``: the serve app on Ray Serve, two replicas answering concurrent clients.

A local Ray cluster of 2 CPUs, one per replica; the real ``openai`` and ``lamini`` clients.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install 'llmrun[ray]'")
pytest.importorskip("starlette", reason="serving needs the serve extra: pip install 'llmrun[serve]'")
openai = pytest.importorskip("openai")
lamini = pytest.importorskip("lamini")

import llmrun  # noqa: E402
from llmrun.errors import ConfigurationError  # noqa: E402
from llmrun.serve import ServeSettings  # noqa: E402
from llmrun.serve.ray_serve import REPLICA_HEADER, build_application, serve_replicated  # noqa: E402

pytestmark = pytest.mark.slow
KEY = "ray-serve-key"
MODEL = "tiny-neox"
PROMPTS = [f"Question {i}: what comes after {i}? Answer:" for i in range(12)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_command_serves_replicas_until_interrupted(
    tiny_checkpoint_dirs: dict[str, Path], tmp_path: Path
) -> None:
    # first in the module, before the fixture's cluster: the command starts its own local one
    assert not ray.is_initialized()
    port = free_port()
    command = [sys.executable, "-m", "llmrun.cli", "serve", str(tiny_checkpoint_dirs["gpt_neox"])]
    options = ["--port", str(port), "--replicas", "1", "--device", "cpu", "--model-name", MODEL]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([*command, *options], stdout=log, stderr=subprocess.STDOUT, env=os.environ)
    try:
        deadline, body = time.monotonic() + 240, b""
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
                    body = reply.read()
                    break
            except OSError:
                time.sleep(1)
        assert b'"status":"ok"' in body.replace(b" ", b""), (tmp_path / "serve.log").read_text()[-3000:]
        reply = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        assert reply.completions.create(model=MODEL, prompt="Hello", max_tokens=3).choices[0].text
    finally:
        server.send_signal(signal.SIGINT)
        try:
            assert server.wait(timeout=120) == 0
        finally:
            if server.poll() is None:
                server.kill()
            log.close()


@pytest.fixture(scope="module")
def served(tiny_checkpoint_dirs: dict[str, Path]) -> Iterator[str]:
    """Two replicas of the tiny checkpoint's server on Ray Serve; the base URL."""
    from ray import serve

    port = free_port()
    settings = ServeSettings(port=port, api_key=KEY, max_batch_size=8, model_name=MODEL)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_application(
            str(tiny_checkpoint_dirs["gpt_neox"]), settings, replicas=2, cpus_per_replica=1, device="cpu"
        )
        serve.run(app, name="llmrun", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_two_replicas_answer_concurrent_clients_on_both_wires(
    served: str, tiny_checkpoint_dirs: dict[str, Path]
) -> None:
    runner = llmrun.load(str(tiny_checkpoint_dirs["gpt_neox"]), device="cpu")
    expected = {p: runner.generate(p, max_new_tokens=6) for p in PROMPTS}
    oa = openai.OpenAI(base_url=served + "/v1", api_key=KEY, max_retries=0, timeout=120)
    lm = lamini.Lamini(MODEL, api_key=KEY, api_url=served)

    def on_openai(prompt: str) -> tuple[str, str]:
        raw = oa.completions.with_raw_response.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0)
        return raw.parse().choices[0].text, raw.headers[REPLICA_HEADER]

    def on_lamini(prompt: str) -> Any:
        return lm.generate(prompt, max_new_tokens=6)

    with ThreadPoolExecutor(max_workers=12) as pool:
        openai_answers = list(pool.map(on_openai, PROMPTS * 2))
        lamini_answers = list(pool.map(on_lamini, PROMPTS))
    assert [text for text, _ in openai_answers] == [expected[p] for p in PROMPTS * 2]
    assert lamini_answers == [expected[p] for p in PROMPTS]
    assert len({replica for _, replica in openai_answers}) == 2  # both replicas answered


def test_auth_is_the_apps_own_on_every_replica(served: str) -> None:
    wrong = openai.OpenAI(base_url=served + "/v1", api_key="wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        wrong.completions.create(model=MODEL, prompt="hi", max_tokens=2)


def test_bad_settings_fail_before_ray_starts(tmp_path: Path) -> None:
    settings = ServeSettings(port=free_port())
    with pytest.raises(ConfigurationError, match="replicas=0"):
        serve_replicated("m", settings, replicas=0)
    with pytest.raises(ConfigurationError, match="invalid autoscaling settings"):
        serve_replicated("m", settings, autoscaling={"min_replicas": 3, "max_replicas": 1})
    with pytest.raises(ConfigurationError, match="fixed port"):
        serve_replicated("m", ServeSettings(port=0))


def test_the_commands_bad_options_are_llmrun_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from llmrun.cli import main

    assert main(["serve", "m", "--port", "0", "--replicas", "2"]) == 1
    assert "fixed port" in capsys.readouterr().err
    assert main(["serve", "m", "--port", "8123", "--autoscaling", "{max: 2}"]) == 1
    assert "--autoscaling must be JSON" in capsys.readouterr().err
    assert main(["serve", "m", "--port", "8123", "--autoscaling", '{"max_replicas": "many"}']) == 1
    assert "invalid autoscaling settings" in capsys.readouterr().err
