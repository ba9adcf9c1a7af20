# Lamini's mid-2023 dataset generator (lamini-datasets): LLAMA_ENVIRONMENT=STAGING with a "staging" config
# section, add_data of seed values, a batch of sampled typed outputs (random=True).
# Cut: data/seed_tasks.jsonl (five seed tasks are written instead, in a scratch folder); the token is
# filled from the environment, as its authors filled in theirs.
import json
import os
import tempfile

from llmrun import LLM, Context, Type

token = os.environ.get("LAMINI_API_KEY", "<TOKEN>")
os.environ["LLAMA_ENVIRONMENT"] = "STAGING"
config = {
    "staging": {
        "key": token,
    }
}

llm = LLM(name="lamini-datasets", config=config)

os.chdir(tempfile.mkdtemp())
os.makedirs("data")
with open("data/seed_tasks.jsonl", "w") as f:
    for i in range(5):
        f.write(
            json.dumps(
                {"instruction": f"Add {i} and {i}.", "instances": [{"input": "", "output": str(2 * i)}]}
            )
            + "\n"
        )

seed_tasks = [json.loads(l) for l in open("data/seed_tasks.jsonl", "r")]  # noqa: E741, SIM115, UP015 - as written
seed_instruction_data = [
    {
        "instruction": t["instruction"],
        "input": t["instances"][0]["input"],
        "output": t["instances"][0]["output"],
    }
    for t in seed_tasks
]
print(f"Loaded {len(seed_instruction_data)} human-written seed instructions")


class SeedData(Type):
    instruction: str = Context("An instruction that describes a task")
    input: str = Context("an input that provides further context")
    output: str = Context("a response that appropriately completes the request")


seed_data = []
for datum in seed_instruction_data:
    seed_data.append(SeedData(instruction=datum["instruction"], input=datum["input"], output=datum["output"]))


class NewSeedData(Type):
    instruction: str = Context("A new and diverse instruction that describes a task")
    input: str = Context("an new input that provides further context")
    output: str = Context("a response that appropriately completes the request")


examples = seed_data[:3]
llm.add_data(examples)

seed_data = seed_data[3:]
generated_data = llm(input=seed_data, output_type=NewSeedData, random=True)

print("Generating new examples...")
print(generated_data)
assert len(generated_data) == 2 and all(isinstance(d, NewSeedData) for d in generated_data)
