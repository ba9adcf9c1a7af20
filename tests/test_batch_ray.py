"""``llmrun batch --ray`` on a local 2-CPU Ray cluster: the same rows as one process, and resume after a kill.

The cluster starts once for the module (about 15 s). ``LLMRUN_RAY_TEST_ROWS`` sets how many typed rows
the equality test runs (default 24; ``nox -s ray`` runs the issue's 200).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmrun.batch import run_batch
from llmrun.batch.parts import PartStore, read_output
from llmrun.errors import ModelLoadError

ray = pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install 'llmrun[ray]'")
pytestmark = pytest.mark.slow

ROWS = int(os.environ.get("LLMRUN_RAY_TEST_ROWS", "24"))

APP = """
from llmrun import Context, Type


class Answer(Type):
    answer: str = Context("a short answer")
    confidence: float = Context("how sure, 0 to 1", ge=0, le=1)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Ray cluster of 2 CPUs whose workers can import ``ray_app`` (as a user's app); its address."""
    folder = tmp_path_factory.mktemp("ray-app")
    (folder / "ray_app.py").write_text(APP)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), saved) if p)
    sys.path.insert(0, str(folder))
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()
        sys.path.remove(str(folder))
        sys.modules.pop("ray_app", None)
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def questions(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?"}) + "\n" for i in range(n)))
    return path


def test_typed_rows_over_two_actors_equal_one_process(
    cluster: str, tiny_gpt_neox_dir: Path, tmp_path: Path
) -> None:
    source = questions(tmp_path / "rows.jsonl", ROWS)
    common = {
        "output_type": "ray_app:Answer",
        "input_key": "question",
        "chunk_size": 4,
        "device": "cpu",
        "progress": False,
        "generation": {"max_new_tokens": 48},
    }
    local = run_batch(str(tiny_gpt_neox_dir), source, tmp_path / "local.jsonl", **common)  # type: ignore[arg-type]
    spread = run_batch(
        str(tiny_gpt_neox_dir),
        source,
        tmp_path / "ray.parquet",
        ray=True,
        actors=2,
        threads_per_actor=1,
        **common,  # type: ignore[arg-type]
    )
    one, two = read_output(tmp_path / "local.jsonl"), read_output(tmp_path / "ray.parquet")
    assert [r["index"] for r in two] == list(range(ROWS))
    assert two == one  # greedy: row by row the same outputs, errors, finish reasons and token counts
    assert (spread.rows, spread.errors) == (local.rows, local.errors)
    assert sum(r["error"] is None for r in one) > 0  # the comparison covers answered rows


DRIVER = """
import sys
from llmrun.batch import run_batch
run_batch("m", sys.argv[1], sys.argv[2], backend="fake", output_type="ray_app:Answer", input_key="question",
          chunk_size=2, progress=False, ray=sys.argv[3], actors=1, delay=0.5)
"""


def test_ray_job_killed_midway_resumes_with_every_row_once(cluster: str, tmp_path: Path) -> None:
    source = questions(tmp_path / "rows.jsonl", 24)
    out = tmp_path / "out.jsonl"
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER))
    driver = subprocess.Popen([sys.executable, str(script), str(source), str(out), cluster])
    store = PartStore(out)
    try:
        deadline = time.monotonic() + 180
        while (not store.exists() or len(store.done()) < 2) and time.monotonic() < deadline:
            assert driver.poll() is None, "the driver ended before it could be killed"
            time.sleep(0.05)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    done = len(store.done())
    assert 2 <= done < 12
    summary = run_batch(
        "m",
        source,
        out,
        backend="fake",
        output_type="ray_app:Answer",
        input_key="question",
        chunk_size=2,
        progress=False,
        ray=cluster,
        resume=True,
        delay=0.5,
    )
    records = read_output(out)
    assert [r["index"] for r in records] == list(range(24))
    assert summary.skipped >= 2 * done  # parts written before the kill were not redone
    fresh = run_batch(
        "m",
        source,
        tmp_path / "fresh.jsonl",
        backend="fake",
        output_type="ray_app:Answer",
        input_key="question",
        progress=False,
    )
    assert records == read_output(fresh.output)


def test_an_actor_that_cannot_load_the_model_raises_the_llmrun_error(cluster: str, tmp_path: Path) -> None:
    source = questions(tmp_path / "rows.jsonl", 2)
    with pytest.raises(ModelLoadError):
        run_batch(str(tmp_path / "no-model-here"), source, tmp_path / "out.jsonl", ray=True, progress=False)


def test_resume_on_ray_with_every_part_done_only_assembles(cluster: str, tmp_path: Path) -> None:
    source = questions(tmp_path / "rows.jsonl", 6)
    out = tmp_path / "out.jsonl"
    seen: list[int] = []

    def stop_at_the_end(rows: int) -> None:
        seen.append(rows)
        if sum(seen) == 6:
            raise KeyboardInterrupt  # after the last part is saved, before the output is assembled

    options = {"backend": "fake", "input_key": "question", "chunk_size": 2}
    with pytest.raises(KeyboardInterrupt):
        run_batch("m", source, out, ray=cluster, progress=stop_at_the_end, **options)  # type: ignore[arg-type]
    assert len(PartStore(out).done()) == 3
    summary = run_batch("m", source, out, ray=cluster, resume=True, progress=False, **options)  # type: ignore[arg-type]
    assert (summary.rows, summary.skipped) == (6, 6)
    assert [r["index"] for r in read_output(out)] == list(range(6))
