# lamini-ai/lamini 2023 tests (test_finetune_custom_prompts.py): LLMEngine(prompt=BlankPrompt()), save_data, train.
# Import changed: `from llama.prompts.blank_prompt import BlankPrompt` -> llmrun.compat.prompts.
from llmrun import LLMEngine
from llmrun.compat.prompts import BlankPrompt

prompt = BlankPrompt()
llm = LLMEngine(
    id="Example",
    prompt=prompt,
    model_name="EleutherAI/pythia-70m",
)
print(prompt.construct_prompt(prompt.input(input="What is the meaning of life?"), prompt.output))
assert prompt.construct_prompt(prompt.input(input="hi"), prompt.output) == "hi"
ans = llm(prompt.input(input="What is the meaning of life?"), prompt.output)
print(ans)
assert isinstance(ans.output, str)

data = [
    [
        prompt.input(input="How do I use this function?"),
        prompt.output(output="This function does something useful"),
    ]
    for _ in range(4)
]
llm.save_data(data)

llm.train(finetune_args={"max_steps": 1})
print(llm.model_name)
