# lamini-ai/lamini issue #26 (2023-10), second snippet: QuestionAnswerModel(model_name=...), train(enable_peft=True)
# on the Colab's seed data, get_answer.
# Cut: the wget of seed_lamini_docs.jsonl (a small file is written instead, and loaded as the Colab did);
# train() is kept short (max_steps).
import json
import os
import tempfile

from llmrun import QuestionAnswerModel

os.chdir(tempfile.mkdtemp())
with open("seed_lamini_docs.jsonl", "w") as f:
    f.write(
        json.dumps({"question": "How can I add data to Lamini?", "answer": "Use load_question_answer."})
        + "\n"
    )

model = QuestionAnswerModel(model_name="EleutherAI/pythia-410m-v0")
model.load_question_answer_from_jsonlines("seed_lamini_docs.jsonl")
model.train(enable_peft=True, finetune_args={"max_steps": 1})
print(model.get_answer("How can I add data to Lamini?"))
