# lamini-ai/lamini issue #28 (2023-10): BasicModelRunner(model_name=..., config={"production": {"key": ...}}).
# The "xxxxxxxxxxx" key is filled from the environment, as the user filled in theirs.
import os

from llmrun import BasicModelRunner

non_finetuned = BasicModelRunner(
    model_name="meta-llama/Llama-2-7b-hf",
    config={
        "production": {
            "key": os.environ.get("LAMINI_API_KEY", "xxxxxxxxxxx"),
        }
    },
)
non_finetuned_output = non_finetuned("Tell me how to train my dog to sit")
print(non_finetuned_output)
assert isinstance(non_finetuned_output, str)
