# Lamini's 2023 QuestionAnswerModel Colab, as copied into third-party repos: lamini.api_key, the runner's
# `config` dict, train(enable_peft=True), get_eval_results().
# Cut: dotenv and the gdown download of the seed data (a small file is written instead).
import json
import os
import tempfile
import time

import lamini

from llmrun import QuestionAnswerModel


def print_training_results(results):
    print("-" * 100)
    print("Training Results")
    print(results)
    print("-" * 100)


seed = os.path.join(tempfile.mkdtemp(), "seed_lamini_docs.jsonl")
with open(seed, "w") as f:
    for q, a in [
        ("How can I add data to Lamini?", "Use load_question_answer."),
        ("What is Lamini?", "An LLM engine."),
    ]:
        f.write(json.dumps({"question": q, "answer": a}) + "\n")


def main():
    lamini.api_key = os.getenv("LAMINI_API_KEY")

    finetune_model = QuestionAnswerModel()
    finetune_model.load_question_answer_from_jsonlines(seed)
    finetune_model.config["api_key"] = os.getenv("LAMINI_API_KEY")

    start = time.time()
    finetune_model.train(enable_peft=True, finetune_args={"max_steps": 1})
    print(f"Time taken: {time.time() - start} seconds")

    results = finetune_model.get_eval_results()
    print_training_results(results)
    return results


results = main()
