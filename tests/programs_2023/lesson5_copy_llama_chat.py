# A public copy of course lesson 5 (2023) that tunes the Llama 2 chat model instead of pythia, with an
# LLMEngine keyed through the config dict, then reads evaluate()'s 2023 dict into a DataFrame.
# Cut: the course's lamini_docs.jsonl (three rows written instead, in a scratch folder); the key
# placeholder is filled from the environment.
import json
import os
import tempfile

import pandas as pd

from llmrun import BasicModelRunner, LLMEngine

os.chdir(tempfile.mkdtemp())
with open("lamini_docs.jsonl", "w") as f:
    for q, a in [
        ("What is Lamini?", "An LLM engine for developers."),
        ("How do I add data?", "Use load_data."),
        ("Can I train for free?", "Yes, small models."),
    ]:
        f.write(json.dumps({"question": q, "answer": a}) + "\n")

llm = LLMEngine(
    id="marketing",
    model_name="meta-llama/Llama-2-7b-chat-hf",
    config={
        "production": {
            "key": os.environ.get("LAMINI_API_KEY", "<YOUR-KEY-HERE>"),
        }
    },
)

model = BasicModelRunner("meta-llama/Llama-2-7b-chat-hf")
model.load_data_from_jsonlines("lamini_docs.jsonl", input_key="question", output_key="answer")
model.train(is_public=True)

out = model.evaluate()

lofd = []
for e in out["eval_results"]:
    q = f"{e['input']}"
    at = f"{e['outputs'][0]['output']}"
    ab = f"{e['outputs'][1]['output']}"
    di = {"question": q, "trained model": at, "Base Model": ab}
    lofd.append(di)
df = pd.DataFrame.from_dict(lofd)
print(df)
assert list(df.columns) == ["question", "trained model", "Base Model"]
