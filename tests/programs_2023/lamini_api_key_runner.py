# A third-party script (2023): `import lamini; lamini.api_key = ...`, then BasicModelRunner with an [INST] prompt.
import lamini

from llmrun import BasicModelRunner

lamini.api_key = "0123456789abcdef"

model = BasicModelRunner("meta-llama/Llama-2-7b-hf")
# model = BasicModelRunner("meta-llama/Llama-2-7b-chat-hf")
non_finetuned_output = model(
    "[INST]" + "Assess the agent's response and suggest a better one if needed." + "[INST]"
    "customer query: I received a damaged product."
    + "agent response : That's your fault for not checking the package before accepting it."
    "agent response assessment: "
    "suggested response: "
)
print(non_finetuned_output)
assert isinstance(non_finetuned_output, str)
