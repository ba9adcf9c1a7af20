# Course lesson 5: fine-tune pythia on question/answer pairs, then read the evaluation as 2023 did.
import json
import os
import tempfile

import lamini
import pandas as pd

from llmrun import BasicModelRunner

# the lesson's own credentials cell (None when the variables are unset: the usual places are read then)
lamini.api_url = os.getenv("POWERML__PRODUCTION__URL")
lamini.api_key = os.getenv("POWERML__PRODUCTION__KEY")

rows = [
    {"question": "What is Lamini?", "answer": "A platform to fine-tune language models."},
    {"question": "How do I add data?", "answer": "Use load_data or load_data_from_jsonlines."},
    {"question": "How do I train?", "answer": "Call model.train()."},
    {"question": "Where do I get a key?", "answer": "From your account page."},
    {"question": "Can I use my own data?", "answer": "Yes, as question and answer pairs."},
    {"question": "Which models can I tune?", "answer": "Open models such as pythia."},
    {"question": "Is there a free tier?", "answer": "Yes, for small models."},
    {"question": "How do I evaluate?", "answer": "Call model.evaluate() after training."},
    {"question": "What does evaluate return?", "answer": "Outputs of the tuned and the base model."},
    {"question": "Can I batch calls?", "answer": "Yes, pass a list of prompts."},
]
filename = os.path.join(tempfile.mkdtemp(), "lamini_docs.jsonl")
with open(filename, "w") as f:
    for row in rows:
        f.write(json.dumps(row) + "\n")

model = BasicModelRunner("EleutherAI/pythia-410m")
model.load_data_from_jsonlines(filename, input_key="question", output_key="answer")
model.train(is_public=True)

out = model.evaluate()
lofd = []
for e in out["eval_results"]:
    q = f"{e['input']}"
    at = f"{e['outputs'][0]['output']}"
    ab = f"{e['outputs'][1]['output']}"
    lofd.append({"question": q, "trained model": at, "Base Model": ab})
df = pd.DataFrame.from_dict(lofd)
print(df)
assert len(df) >= 1
assert model.model_name != "EleutherAI/pythia-410m"  # the runner now answers with the tuned model
print(model("What is Lamini?"))
