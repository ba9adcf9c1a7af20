# Course lesson 3: a small base model against an instruction-tuned one, one prompt and a batch.
from llmrun import BasicModelRunner

prompt_template = """### Instruction:
{instruction}

### Response:"""

non_instruct_model = BasicModelRunner("meta-llama/Llama-2-7b-hf")
non_instruct_output = non_instruct_model("Tell me how to train my dog to sit")
print("Not instruction-tuned output (Llama 2 Base):", non_instruct_output)

instruct_model = BasicModelRunner("meta-llama/Llama-2-7b-chat-hf")
instruct_output = instruct_model("Tell me how to train my dog to sit")
print("Instruction-tuned output (Llama 2): ", instruct_output)

instructions = ["Give three tips for staying healthy.", "What are the three primary colors?"]
prompts = [prompt_template.format(instruction=i) for i in instructions]
outputs = BasicModelRunner("EleutherAI/pythia-70m")(prompts)
assert len(outputs) == 2
for prompt, output in zip(prompts, outputs):
    print(prompt, output)
    assert isinstance(output, str)
