"""Settings resolution, the command's early checks, and chat prompts (templates, Llama 2, neither)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("openai")

import openai
from transformers import AutoTokenizer

from llmrun.cli import main
from llmrun.errors import ConfigurationError
from llmrun.serve import ServeSettings
from llmrun.serve.chat import llama2_prompt, render_chat
from llmrun.serve.errors import ServeError
from llmrun.serve.launch import load_engine

from .conftest import API_KEY, start_server

LLAMA2_CHAT = "meta-llama/Llama-2-7b-chat-hf"


def test_settings_come_from_arguments_then_env_then_file(monkeypatch: pytest.MonkeyPatch) -> None:
    Path("llmrun.toml").write_text("[serve]\nport = 9100\nmax_queue = 7\n")
    monkeypatch.setenv("LLMRUN_SERVE_MAX_QUEUE", "9")
    monkeypatch.setenv("LLMRUN_SERVE_API_KEY", "from-env")
    settings = ServeSettings.resolve({"port": 9200, "host": None})
    assert (settings.host, settings.port, settings.max_queue, settings.api_key) == (
        "127.0.0.1",
        9200,
        9,
        "from-env",
    )
    assert ServeSettings.resolve().port == 9100
    assert "from-env" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "file", "words"),
    [
        ({"LLMRUN_SERVE_PORT": "eighty"}, "", "LLMRUN_SERVE_PORT='eighty' is not a valid int"),
        ({}, "[serve]\napi_key = 'x'\n", "not read from the config file"),
        ({}, "[serve]\nworkers = 4\n", "unknown [serve] setting(s) workers"),
        ({"LLMRUN_SERVE_TIMEOUT_S": "-1"}, "", "timeout_s=-1.0 is invalid"),
        ({"LLMRUN_SERVE_MAX_BATCH_SIZE": "0"}, "", "max_batch_size=0 is invalid"),
    ],
)
def test_bad_settings_fail_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], file: str, words: str
) -> None:
    Path("llmrun.toml").write_text(file)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(
        ConfigurationError, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        ServeSettings.resolve()


def test_the_command_checks_its_settings_before_loading_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "no/such-model", "--port", "70000"]) == 1
    assert "port=70000 is invalid" in capsys.readouterr().err


def test_llama2_format_puts_the_system_prompt_in_the_first_turn() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Who are you?"},
    ]
    assert llama2_prompt(messages) == (
        "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Who are you? [/INST]"
    )
    with pytest.raises(ServeError, match="alternate"):
        llama2_prompt([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_a_model_without_template_or_llama2_format_refuses_chat(tiny_llama_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert not getattr(tokenizer, "chat_template", None)
    with pytest.raises(ServeError, match="no chat template") as caught:
        render_chat(tokenizer, [{"role": "user", "content": "hi"}], llama2=False, model="tiny")
    assert caught.value.status == 400


def test_a_llama2_chat_model_without_template_chats_in_its_format(tiny_llama_dir: Path) -> None:
    engine = load_engine(str(tiny_llama_dir), ServeSettings(), device="cpu")
    assert not getattr(engine.tokenizer, "chat_template", None)
    server = start_server(engine, model=LLAMA2_CHAT)
    try:
        assert server.app.state.llmrun.llama2_chat
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
        reply = client.chat.completions.create(
            model=LLAMA2_CHAT, messages=messages, max_tokens=3, temperature=0
        )
        prompt = llama2_prompt(messages)
        assert reply.usage is not None
        assert reply.usage.prompt_tokens == len(engine.tokenizer(prompt)["input_ids"])
    finally:
        server.stop()
