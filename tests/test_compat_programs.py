"""2023 `llama` programs (tests/programs_2023), import changed only, run offline on both backends.

Locally they run on tiny checkpoints installed in a Hugging Face cache under the
real model ids they name; on Lamini against the fake server. Each program checks
its own results; these tests run them and check what they leave behind.
"""

from __future__ import annotations

import os
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmrun.errors import UnsupportedFeatureError

pytest.importorskip("torch", reason="the local programs need the local extra")
pytest.importorskip("lamini", reason="the Lamini programs need the lamini client")

from llmrun.testing.checkpoints import install_in_hf_cache
from llmrun.testing.lamini_server import FakeLaminiServer

PROGRAMS = Path(__file__).parent / "programs_2023"

#: The model ids the programs name, and the tiny checkpoint family standing in for each.
REAL_IDS = {
    "EleutherAI/pythia-70m": "gpt_neox",
    "EleutherAI/pythia-410m": "gpt_neox",
    "EleutherAI/pythia-410m-deduped": "gpt_neox",
    "EleutherAI/pythia-410m-v0": "gpt_neox",
    "EleutherAI/pythia-2.8b-deduped": "gpt_neox",
    "meta-llama/Llama-2-7b-hf": "llama",
    "meta-llama/Llama-2-7b-chat-hf": "llama",
    "mistralai/Mistral-7B-Instruct-v0.1": "llama",
}
BOTH = [
    "lesson1_why_finetune.py",
    "lesson3_instruction_finetuning.py",
    "lesson5_training.py",
    "llmengine_pages.py",
    "runners_pages.py",
    "examples_pages.py",
    "mid_2023_llm.py",
    "retrieval_runner.py",
    "classifier.py",
    "docs_to_qa.py",
    # beyond the course and the docs' LLMEngine/runners/Examples pages (the second pass)
    "getting_started.py",
    "python_library_v2.py",
    "infer_context.py",
    "rlhf_improve.py",
    "blank_prompt_train.py",
    "operator_blank_prompt.py",
    "hyperparameter_tuning.py",
    "lamini_api_key_runner.py",
    "lesson2_data_preparation.py",
    "customer_support_operator.py",
    "prompt_templates_page.py",
    "python_library_page.py",
    "error_handling_page.py",
    "auth_page.py",
    "io_runner_loaders.py",
    "issue28_runner_keywords.py",
    "docs_to_qa_early.py",
    "lesson5_copy_llama_chat.py",
    "lamini_dict_engine.py",
    "translator_subclass.py",
]


#: Programs that tune with enable_peft=True: LoRA locally; on Lamini a clear error (see the test below).
PEFT = ["qa_model_peft.py", "qa_model_colab.py", "issue26_qa_peft.py"]


@pytest.fixture(scope="module")
def real_id_cache(tiny_checkpoint_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("hf-cache-real-ids")
    for repo_id, family in REAL_IDS.items():
        install_in_hf_cache(tiny_checkpoint_dirs[family], repo_id, cache)  # type: ignore[index]
    return cache


@pytest.fixture
def local_env(real_id_cache: Path, monkeypatch: pytest.MonkeyPatch, no_network: None) -> Iterator[None]:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(real_id_cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(real_id_cache))
    monkeypatch.setenv("LLMRUN_BACKEND", "local")
    monkeypatch.setenv("LLMRUN_DEVICE", "cpu")
    monkeypatch.setenv("LLMRUN_MODEL", "EleutherAI/pythia-70m")
    return


@pytest.fixture
def lamini_env(fake_lamini_env: FakeLaminiServer, monkeypatch: pytest.MonkeyPatch) -> FakeLaminiServer:
    monkeypatch.setenv("LLMRUN_BACKEND", "lamini")
    monkeypatch.setenv("LLMRUN_POLL_INTERVAL", "0.01")
    return fake_lamini_env


def run_program(name: str) -> dict[str, Any]:
    cwd, environ = os.getcwd(), dict(os.environ)  # a program may chdir, or set LLAMA_ENVIRONMENT
    try:
        return runpy.run_path(str(PROGRAMS / name), run_name="__main__")
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)


def test_every_program_changes_only_the_import() -> None:
    for path in PROGRAMS.glob("*.py"):
        imports = [line for line in path.read_text().splitlines() if line.startswith(("from ", "import "))]
        # `import llama` becomes `import llmrun as llama` (the only other change 2023 code needs)
        changed = [line for line in imports if "llama" in line and line != "import llmrun as llama"]
        assert not changed, path.name
        assert any(line.startswith("from llmrun") for line in imports), path.name


@pytest.mark.parametrize(
    "name",
    [
        *BOTH,
        *PEFT,
        "batching_page.py",  # on Lamini: cancel_job is an error (test_what_lamini_cannot_do...)
        "lamini_datasets_staging.py",  # on Lamini: random=True is an error, as below
        "position_parser.py",  # on Lamini: random=True is an error (test_what_lamini_cannot_do...)
        "lamini_test_error.py",  # on Lamini: test_an_unknown_model_is_llama_error_model_name_error_on_lamini
        "llmengine_sampling_and_cancel.py",
        "examples_extract_html.py",  # a bare `list` field: items of any JSON type, bounded by the grammar
        "advanced_page.py",
    ],
)
def test_program_runs_locally(name: str, local_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    scope = run_program(name)
    assert capsys.readouterr().out  # every program prints what it got
    if name == "retrieval_runner.py":
        assert scope["index"].index.ntotal == len(scope["index"].splits) == 2  # a chunk per file
    if name == "qa_model_peft.py":  # the tuned model, loaded again by the name train() left
        assert scope["new_model"].model_name == scope["model"].model_name
        assert Path(scope["model"].model_name).is_dir()
    if name == "qa_model_colab.py":
        assert scope["results"]["eval_results"][0]["input"]
    if name == "lesson5_training.py":
        assert Path(scope["model"].model_name).is_dir()  # the tuned checkpoint on disk
        assert scope["out"]["eval_results"][0]["outputs"][1]["model_name"] == "EleutherAI/pythia-410m"


@pytest.mark.parametrize("name", BOTH)
def test_program_runs_on_lamini(name: str, lamini_env: FakeLaminiServer) -> None:
    scope = run_program(name)
    # the lesson-5 copy only trains and evaluates (Lamini's eval results need no completions)
    assert lamini_env.requests_to("/v1/train" if name == "lesson5_copy_llama_chat.py" else "/v1/completions")
    if name == "retrieval_runner.py":
        assert scope["nearest"] == [scope["index"].splits[0]]  # the fake's embeddings share words
        assert lamini_env.requests_to("/v1/embedding")
    if name == "classifier.py":  # the fake's embeddings share words, so the vote is meaningful
        assert scope["classifier"].predict(["the cat purrs", "the dog barks loudly"]) == ["cat", "dog"]
        assert scope["binary"].predict(["works great, I love it"]) == [1]
    if name == "python_library_v2.py":  # the key came from the 2023 config dict
        assert lamini_env.requests_to("/v1/completions")[0].header("authorization") == "Bearer test-key"
    if name == "lesson5_training.py":
        body = lamini_env.requests_to("/v1/train")[0].body
        assert body["is_public"] is True
        assert scope["df"]["trained model"].tolist()  # the fake's tuned model repeats its answers


def test_what_lamini_cannot_do_fails_early_naming_the_alternative(lamini_env: FakeLaminiServer) -> None:
    with pytest.raises(UnsupportedFeatureError, match=r"sample\(\).*'lamini'.*backend='local'"):
        run_program("llmengine_sampling_and_cancel.py")
    with pytest.raises(UnsupportedFeatureError, match=r"Extracted.links is a list.*local backend"):
        run_program("examples_extract_html.py")
    with pytest.raises(UnsupportedFeatureError, match=r"random=True.*'lamini'.*backend='local'"):
        run_program("advanced_page.py")
    with pytest.raises(UnsupportedFeatureError, match=r"random=True.*'lamini'.*backend='local'"):
        run_program("position_parser.py")
    with pytest.raises(UnsupportedFeatureError, match=r"random=True.*'lamini'.*backend='local'"):
        run_program("lamini_datasets_staging.py")  # after reading its key from the "staging" section
    assert not lamini_env.requests_to("/v1/completions")


def test_a_2023_openai_model_name_runs_on_lamini_and_fails_clearly_locally(
    lamini_env: FakeLaminiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # agent_datasource_save_data.py names "chat/gpt-3.5-turbo", which Lamini's 2023 service routed to OpenAI
    scope = run_program("agent_datasource_save_data.py")
    assert [type(d).__name__ for d in scope["data"]] == ["SimpleNamespace"] * 2
    monkeypatch.setenv("LLMRUN_BACKEND", "local")
    with pytest.raises(UnsupportedFeatureError, match=r"'chat/gpt-3.5-turbo'.*'local'.*backend='openai'"):
        run_program("agent_datasource_save_data.py")


def test_an_unknown_model_is_llama_error_model_name_error_on_lamini(monkeypatch: pytest.MonkeyPatch) -> None:
    # lamini_test_error.py expects llama.error.ModelNameError for model_name="Grrr" (locally: not cached)
    with FakeLaminiServer(models={"EleutherAI/pythia-70m"}) as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("LLMRUN_BACKEND", "lamini")
        scope = run_program("lamini_test_error.py")
    assert "Grrr" in str(scope["caught"])


@pytest.mark.parametrize("name", PEFT)
def test_enable_peft_on_lamini_fails_early_naming_it(name: str, lamini_env: FakeLaminiServer) -> None:
    with pytest.raises(UnsupportedFeatureError, match=r"enable_peft.*'lamini'.*backend='local'"):
        run_program(name)
    assert not lamini_env.requests_to("/v1/train")


def test_the_batching_page_on_lamini_runs_until_cancel_job_which_it_names(
    lamini_env: FakeLaminiServer,
) -> None:
    with pytest.raises(UnsupportedFeatureError, match=r"cancel_job.*'lamini'"):
        run_program("batching_page.py")
    assert lamini_env.requests_to("/v1/batch_completions")  # submitted, polled and read before the cancel
