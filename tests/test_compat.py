"""The 2023 surface, name by name: call conventions, data and job methods, result shapes, credentials,
and the errors for what a backend cannot honour. Fast: the fake backend and the fake Lamini server."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

import llmrun
from llmrun import BasicModelRunner, Context, Lamini, LLMEngine, Type
from llmrun.errors import (
    BackendError,
    ConfigurationError,
    DataError,
    InvalidInputError,
    LLMRunError,
    ServiceUnavailableError,
    UnsupportedFeatureError,
)
from llmrun.testing.fake import FakeRunner
from llmrun.testing.lamini_server import FakeLaminiServer
from llmrun.training import EvalResult, EvalSample, TrainResult

#: Every name ``llama/__init__.py`` exported at v1.0.3 (lamini-ai/lamini 698a8dd), and mid-2023's LLM.
V1_0_3_NAMES = [
    "Type", "Context", "CompareEqualMetric", "setup_config", "error", "QuestionAnswerModel",
    "BasicModelRunner", "InputOutputRunner", "AutocompleteRunner", "LlamaV2Runner", "MistralRunner",
    "Lamini", "LLMEngine", "LaminiClassifier", "BinaryLaminiClassifier", "DirectoryLoader",
    "DefaultChunker", "LaminiIndex", "QueryEngine", "RetrievalAugmentedRunner", "DocsToQA",
    "run_prompt_engineer_questions", "run_prompt_engineer_answers", "finetune_qa", "run_model", "LLM",
]  # fmt: skip


class Question(Type):
    question: str = Context("a question")


class Answer(Type):
    answer: str = Context("the answer")


def fake_engine(**kwargs: Any) -> LLMEngine:
    return LLMEngine(id="t", model_name="m", backend="fake", **kwargs)


def fake_of(facade: Any) -> FakeRunner:
    backend = facade.backend
    assert isinstance(backend, FakeRunner)
    return backend


# ----------------------------------------------------------------------------- names


def test_every_2023_name_imports_from_llmrun_without_loading_a_backend() -> None:
    code = (
        "import sys, llmrun\n"
        f"for name in {V1_0_3_NAMES!r}: getattr(llmrun, name)\n"
        "heavy = [m for m in ('torch', 'transformers', 'lamini', 'faiss') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert set(V1_0_3_NAMES) <= set(llmrun.__all__)


def test_error_names_are_llmrun_errors() -> None:
    from llmrun.compat import error

    assert error.LlamaError is LLMRunError
    assert error.APIError is BackendError
    assert error.UnavailableResourceError is ServiceUnavailableError
    with pytest.raises(error.UserError):
        fake_engine()(Question(question="q"), Answer, max_tokens=0)
    assert llmrun.error is error


def test_unavailable_names_say_what_to_use_instead() -> None:
    with pytest.raises(
        UnsupportedFeatureError, match=r"example_expander cannot be honoured.*add_data_to_class"
    ):
        llmrun.LaminiClassifier(example_expander=lambda x: x)
    with pytest.raises(InvalidInputError, match=r"docs_dirpath .* is not a directory"):
        llmrun.DocsToQA(docs_dirpath="/no/such/dir", backend="fake")
    with pytest.raises(InvalidInputError, match=r"no questions: run prompt_engineer_questions\(\)"):
        llmrun.DocsToQA(backend="fake").prompt_engineer_answers()


# ----------------------------------------------------------------------------- call conventions


def test_input_keyword_positional_and_inputs_are_the_same_call() -> None:
    llm = fake_engine()
    q = Question(question="What is a llama?")
    assert llm(input=q, output_type=Answer) == llm(q, Answer) == llm(q, output_type=Answer)
    model = BasicModelRunner("m", backend="fake")
    assert model(inputs="hi") == model("hi")
    with pytest.raises(InvalidInputError, match="exactly one input"):
        llm(q, Answer, input=q)


def test_2023_keywords_become_llmrun_settings() -> None:
    llm = fake_engine()
    llm("q", max_tokens=7, stop_tokens=["\n"], enable_peft=True, streaming=False)
    request = fake_of(llm).last_request
    assert request is not None
    assert (request.config.max_new_tokens, request.config.stop) == (7, ("\n",))
    llm(Question(question="q"), Answer, random=True)
    assert fake_of(llm).last_request.config.temperature == 0.7  # type: ignore[union-attr]
    with pytest.raises(InvalidInputError, match=r"max_tokens .* or max_new_tokens, not both"):
        llm(Question(question="q"), Answer, max_tokens=3, max_new_tokens=4)
    with pytest.raises(InvalidInputError, match="random='yes' is invalid"):
        llm(Question(question="q"), Answer, random="yes")
    with pytest.raises(InvalidInputError, match="not the input_type Answer"):
        llm(Question(question="q"), Answer, input_type=Answer)


def test_stop_tokens_with_an_output_type_cut_each_value_as_2023_did() -> None:
    # 2023 stopped the generated value, not the JSON around it (a ":" stop would cut '{"answer":')
    response = '{"answer": "Running: daily\\nor not"}'
    llm = LLMEngine(id="t", model_name="m", backend="fake", responses=[response])
    out = llm(Question(question="q"), Answer, stop_tokens=["\n", ":"])
    assert out.answer == "Running"
    assert fake_of(llm).last_request.config.stop == ()  # type: ignore[union-attr]
    with pytest.raises(InvalidInputError, match="stop_tokens must be"):
        llm(Question(question="q"), Answer, stop_tokens=[""])


class ScoredAnswer(Type):
    answer: str = Context("the answer")
    score: float = Context("score for the answer")


def test_score_names_the_output_field_holding_the_models_score() -> None:
    llm = LLMEngine(id="t", model_name="m", backend="fake", responses=['{"answer": "a", "score": 0.5}'])
    assert llm(Question(question="q"), ScoredAnswer, score="score").score == 0.5
    with pytest.raises(InvalidInputError, match=r"score='answer' must name a number field of .*ScoredAnswer"):
        llm(Question(question="q"), ScoredAnswer, score="answer")
    with pytest.raises(InvalidInputError, match=r"score='score' must name a number field of the output type"):
        llm(Question(question="q"), score="score")


def test_model_name_per_call_loads_that_model_once_on_the_same_backend() -> None:
    llm = fake_engine()
    llm(Question(question="q"), Answer, model_name="other")
    llm(Question(question="r"), Answer, model_name="other")
    other = llm.runner_for("other")
    assert isinstance(other, FakeRunner)
    assert other.model_name == "other"
    assert len(other.requests) == 2
    assert fake_of(llm).requests == []


def test_batched_texts_read_as_2023_dicts() -> None:
    outputs = BasicModelRunner("m", backend="fake")(["a", "b"])
    assert all(isinstance(o, str) for o in outputs)
    assert [o["input"] for o in outputs] == ["a", "b"]
    assert outputs[0]["output"] == str(outputs[0])
    assert outputs[0][:1] == str(outputs[0])[:1]


def test_dict_engine_takes_and_returns_dicts() -> None:
    llm = Lamini(id="d", model_name="m", backend="fake")
    out = llm(input={"question": "hi"}, output_type={"answer": "str", "n": "int", "Note": "a remark"})
    assert set(out) == {"answer", "n", "Note"}
    assert isinstance(out["n"], int)
    assert len(llm(input=[{"question": "a"}, {"question": "b"}], output_type={"answer": "str"})) == 2
    with pytest.raises(InvalidInputError, match="output_type must be a non-empty dict"):
        llm(input={"question": "hi"}, output_type=Answer)
    with pytest.raises(InvalidInputError, match=r"field 'ok#maybe': unknown type 'maybe'; use one of bool"):
        llm(input={"question": "hi"}, output_type={"ok#maybe": "whether it is ok"})
    with pytest.raises(InvalidInputError, match="save_data takes Type values"):
        llm.save_data([{}])  # an empty dict is neither a value nor a pair


def test_prompt_template_fills_input_fields() -> None:
    llm = fake_engine(prompt_template="Q: {input:question}\nA:")
    llm(Question(question="why?"), Answer)
    assert fake_of(llm).last_request.prompts[0].startswith("Q: why?\nA:")  # type: ignore[union-attr]
    with pytest.raises(InvalidInputError, match="placeholders"):
        fake_engine(prompt_template="no fields")


def test_improve_adds_the_feedback_to_prompts_with_that_field() -> None:
    llm = fake_engine()
    llm.improve(
        on="answer", to="be short", good_examples=[Answer(answer="yes")], bad_examples=["a long ramble"]
    )
    llm(Question(question="q"), Answer)
    prompt = fake_of(llm).last_request.prompts[0]  # type: ignore[union-attr]
    assert "For answer: be short\n  A good answer: yes\n  A bad answer: a long ramble" in prompt
    llm(Question(question="q"), Question)  # no field "answer": no feedback
    assert "be short" not in fake_of(llm).last_request.prompts[0]  # type: ignore[union-attr]
    with pytest.raises(InvalidInputError, match="non-empty string to="):
        llm.improve(on="answer", to="")


def test_sample_gives_distinct_outputs() -> None:
    samples = fake_engine().sample(Question(question="q"), Answer, n=3)
    assert len(samples) == 3
    assert len({s.answer for s in samples}) == 3


# ----------------------------------------------------------------------------- data


def test_save_data_pairs_train_and_single_values_are_kept_with_a_warning() -> None:
    llm = fake_engine()
    with pytest.warns(UserWarning, match="1 value.*not trained on"):
        llm.save_data([Question(question="alone"), [Question(question="q"), Answer(answer="a")]])
    assert len(llm.examples) == 1
    assert llm.context_data == [Question(question="alone")]
    llm.add_data([[Question(question="q2"), Answer(answer="a2")]])
    assert len(llm.examples) == 2
    llm.set_data([[Question(question="q3"), Answer(answer="a3")]])
    assert len(llm.examples) == 1
    llm.clear_data()
    assert llm.examples == []
    with pytest.raises(InvalidInputError, match="save_data takes Type values"):
        llm.save_data([{"question": "q"}])


def test_train_options_as_2023_passed_them() -> None:
    model = BasicModelRunner("m", backend="fake")
    model.load_data([{"input": "q", "output": "a"}], verbose=True, input_key="input")
    with pytest.raises(UnsupportedFeatureError, match="cannot fine-tune"):  # checked before the backend
        model.train(is_public=True, verbose=True, finetune_args={"num_train_epochs": 2}, peft_args={"r": 4})
    with pytest.raises(ConfigurationError, match="finetune_args key 'bogus' has no llmrun counterpart"):
        model.train(finetune_args={"bogus": 1})
    with pytest.raises(ConfigurationError, match="peft_args key 'rank'"):
        model.train(peft_args={"rank": 4})
    with pytest.raises(ConfigurationError, match="is_public='yes'"):
        model.train(is_public="yes")
    with pytest.raises(ConfigurationError, match="limit=0"):
        model.train(limit=0)
    with pytest.raises(InvalidInputError, match="no training data loaded"):
        BasicModelRunner("m", backend="fake").train()


def test_runners_load_their_own_data_formats(tmp_path: Path) -> None:
    from llmrun import AutocompleteRunner, InputOutputRunner, LlamaV2Runner, QuestionAnswerModel

    io = InputOutputRunner(Question, Answer, "m", backend="fake")
    (tmp_path / "io.jsonl").write_text('{"input-question": "q", "output-answer": "a"}\n')
    io.load_data_from_jsonlines(tmp_path / "io.jsonl")
    io.load_data_from_paired_dicts([{"input": {"question": "q"}, "output": {"answer": "a"}}])
    assert len(io.examples) == 2
    pd = pytest.importorskip("pandas")
    io.load_data_from_paired_dataframes(pd.DataFrame([{"question": "q"}]), pd.DataFrame([{"answer": "a"}]))
    assert len(io.examples) == 3
    with pytest.raises(DataError, match="have 2 and 1 rows"):
        io.load_data_from_paired_dataframes(
            pd.DataFrame([{"question": "q"}] * 2), pd.DataFrame([{"answer": "a"}])
        )
    with pytest.raises(DataError, match=r"expected \[Question, Answer\]"):
        io.load_data([[Answer(answer="x"), Question(question="y")]])
    with pytest.raises(InvalidInputError, match="input must be a Question"):
        io(Answer(answer="x"))
    qa = QuestionAnswerModel("m", backend="fake")
    qa.load_question_answer([{"question": "q", "answer": "a"}])
    assert qa.examples[0].completion == '{"answer":"a"}'
    llama = LlamaV2Runner("m", backend="fake", system_prompt="Be brief.")
    llama.load_data([{"user": "hi", "output": "hello"}])
    assert llama.examples[0].prompt.startswith("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nhi [/INST]")
    auto = AutocompleteRunner("m", backend="fake")
    auto.load_data_from_strings(["abcdef"])
    example = auto.examples[0]
    assert example.prompt + example.completion == "abcdef"


# ----------------------------------------------------------------------------- results


def test_train_and_eval_results_read_as_2023_dicts(tmp_path: Path) -> None:
    result = TrainResult(model_name="tuned", run_dir=tmp_path)
    assert result["model_name"] == "tuned"
    assert result["job_id"] == str(tmp_path)
    assert result["status"] == "COMPLETED"
    assert "job_id" in result
    with pytest.raises(KeyError, match=r"no key 'nope'.*job_id"):
        result["nope"]
    sample = EvalSample("q", "a", "tuned answer", base_output="base answer")
    report = EvalResult(None, None, 1.0, (sample,), 1, extra={"model_name": "tuned", "base_model": "base"})
    row = report["eval_results"][0]
    assert row["input"] == "q"
    assert row["outputs"] == [
        {"model_name": "tuned", "output": "tuned answer"},
        {"model_name": "base", "output": "base answer"},
    ]


# ----------------------------------------------------------------------------- jobs


def test_local_jobs_report_progress_cancel_and_errors() -> None:
    llm = fake_engine(delay=0.05)
    job = llm.submit_inference_job([Question(question=str(i)) for i in range(40)], Answer)
    assert job["status"] in ("SCHEDULED", "RUNNING")
    time.sleep(0.08)
    cancelled = llm.cancel_job(job["job_id"])
    assert cancelled["status"] == "CANCELED"
    done = llm.get_job_results(job["job_id"])
    assert 0 < len(done) < 40
    assert all(isinstance(a, Answer) for a in done)
    llm = fake_engine()
    fake_of(llm).script(RuntimeError("boom"))
    failing = llm.submit_inference_job(Question(question="x"), Answer)
    for _ in range(100):
        if llm.check_job_status(failing["job_id"])["status"] == "ERRORED":
            break
        time.sleep(0.02)
    assert "boom" in llm.check_job_status(failing["job_id"])["error"]
    with pytest.raises(RuntimeError, match="boom"):
        llm.get_job_results(failing["job_id"])
    with pytest.raises(InvalidInputError, match="no inference job 'job-x'"):
        llm.check_job_status("job-x")
    with pytest.raises(InvalidInputError, match="max_new_tokens"):  # checked at submission, not later
        llm.submit_inference_job(Question(question="x"), Answer, max_tokens=-1)


# ----------------------------------------------------------------------------- Lamini


def test_lamini_batch_jobs_and_what_lamini_cannot_do(fake_lamini_env: FakeLaminiServer) -> None:
    llm = LLMEngine(id="b", model_name="m", backend="lamini")
    fake_lamini_env.api.extras.step = 1  # one more item done per poll
    job = llm.submit_inference_job([Question(question=str(i)) for i in range(3)], Answer)
    assert llm.check_job_status(job["job_id"])["status"] == "RUNNING"
    assert len(llm.get_job_results(job["job_id"])) == 2
    status = llm.check_job_status(job["job_id"])
    assert status == {"status": "DONE", "progress": "3 of 3 done", "job_id": job["job_id"]}
    body = fake_lamini_env.requests_to("/v1/batch_completions")[0].body
    assert body["output_type"] == {"answer": "str"}
    with pytest.raises(UnsupportedFeatureError, match=r"cancel_job .* 'lamini'.*no cancel"):
        llm.cancel_job(job["job_id"])
    with pytest.raises(UnsupportedFeatureError, match=r"random=True .* 'lamini'.*backend='local'"):
        llm(Question(question="q"), Answer, random=True)
    with pytest.raises(UnsupportedFeatureError, match=r"sample\(\) .* 'lamini'"):
        llm.sample(Question(question="q"), Answer, n=2)


def test_lamini_index_searches_lamini_embeddings(fake_lamini_env: FakeLaminiServer, tmp_path: Path) -> None:
    from llmrun import DirectoryLoader, LaminiIndex, QueryEngine

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("llamas live in the andes mountains")
    (tmp_path / "docs" / "b.txt").write_text("the stock market fell sharply today")
    index = LaminiIndex(DirectoryLoader(tmp_path / "docs", batch_size=1), backend="lamini")
    assert index.query("where do llamas live", k=1) == ["llamas live in the andes mountains"]
    assert fake_lamini_env.requests_to("/v1/embedding")
    index.save_index(tmp_path / "saved")
    again = LaminiIndex.load_index(tmp_path / "saved", backend="lamini")
    assert again.query("stock market today", k=1) == ["the stock market fell sharply today"]
    engine = QueryEngine(again, model_name="m", k=1, backend="lamini")
    assert isinstance(engine.answer_question("where do llamas live?"), str)
    prompt = fake_lamini_env.requests_to("/v1/completions")[-1].body["prompt"]
    assert "llamas live in the andes mountains\n\nwhere do llamas live?" in prompt


def test_fake_backend_cannot_embed() -> None:
    from llmrun import LaminiIndex

    with pytest.raises(UnsupportedFeatureError, match="embeddings cannot be computed by the 'fake' backend"):
        LaminiIndex(iter([["text"]]), backend="fake")


# ----------------------------------------------------------------------------- credentials


@pytest.fixture
def no_lamini_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import lamini

    for name in ("LAMINI_API_KEY", "LAMINI_API_URL", "POWERML__PRODUCTION__KEY", "POWERML__PRODUCTION__URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(lamini, "api_key", None)
    monkeypatch.setattr(lamini, "api_url", None)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_credentials_as_2023_read_them(no_lamini_key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lamini

    from llmrun.backends.lamini.credentials import resolve_credentials

    (no_lamini_key / ".powerml").mkdir()
    (no_lamini_key / ".powerml" / "configure_llama.yaml").write_text(
        'production:\n    key: "from-file"\n    url: "http://file.example"\n'
    )
    creds = resolve_credentials()
    assert (creds.key.reveal(), creds.url) == ("from-file", "http://file.example")
    monkeypatch.setattr(lamini, "api_key", "from-module")
    assert resolve_credentials().key.reveal() == "from-module"
    monkeypatch.setenv("POWERML__PRODUCTION__KEY", "from-env")
    monkeypatch.setenv("POWERML__PRODUCTION__URL", "http://env.example")
    creds = resolve_credentials()
    assert (creds.key.reveal(), creds.url) == ("from-env", "http://env.example")
    creds = resolve_credentials(config={"production": {"key": "from-config"}})
    assert creds.key.reveal() == "from-config"
    monkeypatch.setenv("LLAMA_ENVIRONMENT", "STAGING")  # a 2023 program's os.environ["LLAMA_ENVIRONMENT"]
    creds = resolve_credentials(config={"staging": {"key": "from-staging"}, "production": {"key": "p"}})
    assert creds.key.reveal() == "from-staging"
    monkeypatch.setenv("LLAMA_ENVIRONMENT", "MOON")
    with pytest.raises(ConfigurationError, match=r"LLAMA_ENVIRONMENT='moon' is not one of PRODUCTION"):
        resolve_credentials(config={"production": {"key": "k"}})


def test_setup_config_is_the_default_config(
    no_lamini_key: Path, fake_lamini: FakeLaminiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmrun.compat.setup import reset_config

    monkeypatch.setattr("llmrun.compat.setup._config", None)
    llmrun.setup_config({"production": {"key": "test-key", "url": fake_lamini.url}})
    try:
        llm = LLMEngine(id="s", model_name="m", backend="lamini")
        assert isinstance(llm(Question(question="q"), Answer), Answer)
    finally:
        reset_config()
    with pytest.raises(ConfigurationError, match="setup_config takes a dict"):
        llmrun.setup_config("key")  # type: ignore[arg-type]


def test_no_warning_from_pydantic_v1_names() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Answer(answer="x").dict() == {"answer": "x"}
        assert Answer.parse_obj({"answer": "y"}).json() == '{"answer":"y"}'


def test_both_2023_constructor_orders_and_keys_a_backend_does_not_need() -> None:
    v1 = LLMEngine("t", "m", "Q: {input:question}", backend="fake", api_key="k")  # v1.0.3's order
    assert v1.prompt_template == "Q: {input:question}"
    docs = LLMEngine("t", "m", {"production": {"key": "k"}}, backend="fake")  # the docs' order
    assert docs.prompt_template is None
    assert BasicModelRunner("m", backend="fake", api_url="http://x").model_name == "m"


def test_v1_job_calls_reach_the_last_training_run(tmp_path: Path) -> None:
    llm = fake_engine()
    llm.job_id = "run-1"
    llm.train_result = TrainResult(model_name="tuned", job_id="run-1")
    assert llm.check_job_status() == llm.check_job_status("run-1")
    assert llm.check_job_status("run-1")["status"] == "COMPLETED"
    with pytest.raises(InvalidInputError, match=r"evaluate\(job_id='other'\)"):
        llm.evaluate("other")
    llm.save_data([[Question(question="q"), Answer(answer="a")]])
    llm.delete_data()
    assert llm.examples == []


def test_mid_2023_fit_and_metrics_and_clear_errors_for_what_is_gone() -> None:
    from llmrun import CompareEqualMetric
    from llmrun.compat.metrics import MatchResult

    llm = fake_engine()
    llm.fit([[Question(question="q"), Answer(answer="a")]])
    assert len(llm.examples) == 1
    llm.add_metric(CompareEqualMetric("a llama", "a lama"))
    (result,) = llm.metrics()
    assert isinstance(result, MatchResult)
    assert 0.0 <= result.similarity <= 1.0
    assert CompareEqualMetric(" same", "same ").score(llm) == 1.0
    with pytest.raises(UnsupportedFeatureError, match=r"LLMEngine.function \(2023\).*plain Python function"):
        _ = llm.function
    assert not hasattr(llm, "train_async")
    with pytest.raises(UnsupportedFeatureError, match=r"LLMEngine.submit_job \(2023\).*submit_inference_job"):
        llm.submit_job(input=Question(question="q"), output_type=Answer, rlhf=True)  # lamini's 2023 test_rlhf
    with pytest.raises(UnsupportedFeatureError, match=r"LLMEngine.parallel \(2023\).*list of inputs"):
        _ = llm.parallel  # lamini's 2023 test_parallel: @llm.parallel


def test_runner_arguments_in_2023_positional_order() -> None:
    from llmrun import AutocompleteRunner, QuestionAnswerModel

    qa = QuestionAnswerModel("m", "qa_task", {"production": {"key": "k"}}, True, backend="fake")
    assert (qa.task_name, qa.enable_peft) == ("qa_task", True)
    auto = AutocompleteRunner("m", "auto_task", {}, False, backend="fake")
    assert auto.task_name == "auto_task"
    with pytest.raises(InvalidInputError, match="enable_peft='yes'"):
        BasicModelRunner("m", "t", "yes", backend="fake")  # type: ignore[arg-type]


def test_a_job_fills_the_prompt_template_once() -> None:
    llm = fake_engine(prompt_template="Q: {input:question}")
    job = llm.submit_inference_job([Question(question="a"), Question(question="b")], Answer)
    for _ in range(100):
        if llm.check_job_status(job["job_id"])["status"] == "DONE":
            break
        time.sleep(0.02)
    assert len(llm.get_job_results(job["job_id"])) == 2
    assert fake_of(llm).last_request.prompts[1].startswith("Q: b")  # type: ignore[union-attr]


def test_a_prompt_template_shapes_training_prompts_as_it_shapes_calls() -> None:
    llm = fake_engine(prompt_template="Q: {input:question}\nA:")
    llm.save_data([[Question(question="why?"), Answer(answer="because")]])
    llm(Question(question="why?"), Answer)
    sent = fake_of(llm).last_request.prompts[0]  # type: ignore[union-attr]
    assert llm.examples[0].prompt == sent


def test_a_2023_pickled_classifier_file_is_a_clear_data_error(tmp_path: Path) -> None:
    import pickle

    from llmrun import LaminiClassifier

    saved = tmp_path / "my_model.lamini"  # 2023's LaminiClassifier.save wrote a pickle
    saved.write_bytes(pickle.dumps({"logistic_regression": None}))
    with pytest.raises(DataError, match=r"my_model.lamini: .*pickle, which llmrun never loads.*save\(\)"):
        LaminiClassifier.load(saved, backend="fake")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match=r"other.json: not a classifier saved by llmrun"):
        LaminiClassifier.load(tmp_path / "other.json", backend="fake")
