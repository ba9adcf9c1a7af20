# Course lesson 2 (a public copy, "Where finetuning fits in"): lamini.api_url/api_key from the environment
# (unset: None), then base vs instruction-tuned models.
# Cut: the alpaca datasets (downloads), rich's table, and the "chat-gpt" runner (OpenAI behind Lamini).
import os

import lamini

lamini.api_url = os.getenv("LAMINI_API_URL_UNSET")
lamini.api_key = os.getenv("LAMINI_API_KEY_UNSET")

from llmrun import BasicModelRunner  # noqa: E402 - after the 2023 key setup, as the notebook had it

non_instruct_model = BasicModelRunner("meta-llama/Llama-2-7b-hf")
non_instruct_output = non_instruct_model("Tell me how to train my dog to sit")
print("Not instruction-tuned output (Llama 2 Base):", non_instruct_output)

instruct_model = BasicModelRunner("meta-llama/Llama-2-7b-chat-hf")
instruct_output = instruct_model("Tell me how to train my dog to sit")
print("Instruction-tuned output (Llama 2): ", instruct_output)
