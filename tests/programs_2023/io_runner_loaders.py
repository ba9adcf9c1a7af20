# lamini-ai/lamini 2023 tests (test_input_output_runner.py): every InputOutputRunner loader, train, evaluate,
# single and batch inference.
# Cut: the repo's two .jsonl test files are written here (both formats); train() is kept short (max_steps).
import json
import os
import tempfile

import pandas as pd

from llmrun import Context, InputOutputRunner, Type

print("Testing InputOutputRunner...")


class Input(Type):
    instruction: str = Context("instruction")
    is_question: int = Context("whether instruction is a question (1) or not (0))")


class Output(Type):
    response: str = Context("response to instruction")
    is_positive: int = Context("whether response was positive (1) or not (0)")


model = InputOutputRunner(input_type=Input, output_type=Output, model_name="EleutherAI/pythia-70m")

model.load_data(
    [
        [
            Input(instruction="What kind of exercise is good for me?", is_question=1),
            Output(response="Running", is_positive=1),
        ]
    ],
    verbose=True,
)
model.load_data_from_paired_dicts(
    [
        {
            "input": {"instruction": "What kind of exercise is good for me?", "is_question": 1},
            "output": {"response": "Running", "is_positive": 1},
        },
    ],
    verbose=True,
)
model.load_data_from_paired_lists(
    [
        [
            {"instruction": "What kind of exercise is good for me?", "is_question": 1},
            {"response": "Running", "is_positive": 1},
        ],
    ],
    verbose=True,
)
df = pd.DataFrame(
    [
        {
            "input-instruction": "What kind of exercise is good for me?",
            "input-is_question": 1,
            "output-response": "Running",
            "output-is_positive": 1,
        },
    ],
    columns=["input-instruction", "input-is_question", "output-response", "output-is_positive"],
)
model.load_data_from_dataframe(df, verbose=True)
input_df = pd.DataFrame(
    [{"instruction": "What kind of exercise is good for me?", "is_question": 1}],
    columns=["instruction", "is_question"],
)
output_df = pd.DataFrame([{"response": "Running", "is_positive": 1}], columns=["response", "is_positive"])
model.load_data_from_paired_dataframes(input_df, output_df, verbose=True)

folder = tempfile.mkdtemp()
flattened = os.path.join(folder, "input_output_runner_data_flattened.jsonl")
nested = os.path.join(folder, "input_output_runner_data.jsonl")
with open(flattened, "w") as f:
    f.write(
        json.dumps(
            {
                "input-instruction": "Hi",
                "input-is_question": 0,
                "output-response": "Hello",
                "output-is_positive": 1,
            }
        )
        + "\n"
    )
with open(nested, "w") as f:
    f.write(
        json.dumps(
            {
                "input": {"instruction": "Hi?", "is_question": 1},
                "output": {"response": "Yes", "is_positive": 1},
            }
        )
        + "\n"
    )
model.load_data_from_jsonlines(flattened, verbose=True)
model.load_data_from_jsonlines(nested, verbose=True)

model.train(finetune_args={"max_steps": 1})
print("new model: " + model.model_name)

model.evaluate()
print(model.evaluation)
results = model.evaluate()
print(results)

output = model(Input(instruction="What kind of exercise is OK for me?", is_question=1))
print(output)
outputs = model(
    [
        Input(instruction="What kind of exercise is OK for me?", is_question=1),
        Input(instruction="What kind of exercise is so-so for me?", is_question=1),
    ]
)
print(outputs)
assert isinstance(output, Output) and len(outputs) == 2
