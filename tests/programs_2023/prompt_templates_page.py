# lamini-ai.github.io (2023) "Prompt Templates" page: a BasePrompt subclass as LLMEngine(prompt=...),
# and the packaged LlamaV2Prompt types.
# Imports changed: `from llama.prompts.prompt import BasePrompt` and
# `from llama.prompts.llama_v2_prompt import ...` -> llmrun.compat.prompts.
from llmrun import Context, LLMEngine, Type
from llmrun.compat.prompts import BasePrompt, LlamaV2Input, LlamaV2Output, LlamaV2Prompt


class QAPrompt(BasePrompt):
    prompt_template = """Below is an instruction that describes a task. Write a response that appropriately completes the request.
### Instruction: {input:question}

### Response:"""


prompt = QAPrompt()
llm = LLMEngine(
    id="prompt_example",
    model_name="EleutherAI/pythia-2.8b-deduped",
    prompt=prompt,
)


class Question(Type):
    question: str = Context("a question")


class Answer(Type):
    answer: str = Context("the response to the question")


ans = llm(Question(question="What are prompts?"), Answer)
print(ans)
assert isinstance(ans, Answer)
assert "### Instruction: What are prompts?" in prompt.construct_prompt(Question(question="What are prompts?"))

chat = LLMEngine(id="llama_v2", model_name="meta-llama/Llama-2-7b-chat-hf", prompt=LlamaV2Prompt())
out = chat(LlamaV2Input(system="You are terse.", user="Name a llama."), LlamaV2Output)
print(out.output)
