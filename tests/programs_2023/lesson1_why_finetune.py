# Course lesson 1: compare a base model with its chat-tuned sibling.
from llmrun import BasicModelRunner

non_finetuned = BasicModelRunner("meta-llama/Llama-2-7b-hf")
non_finetuned_output = non_finetuned("Tell me how to train my dog to sit")
print(non_finetuned_output)
assert isinstance(non_finetuned_output, str)

for question in ["What do you think of Mars?", "taylor swift's best friend"]:
    print(non_finetuned(question))

finetuned_model = BasicModelRunner("meta-llama/Llama-2-7b-chat-hf")
finetuned_output = finetuned_model("Tell me how to train my dog to sit")
print(finetuned_output)
print(finetuned_model("[INST]Tell me how to train my dog to sit[/INST]"))
assert isinstance(finetuned_model("What do you think of Mars?"), str)
