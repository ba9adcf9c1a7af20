# Mid-2023 (the lamini repo's generate_data.py): LLM(name=...), add_data of pairs, per-call model settings.
from llmrun import LLM, Context, Type
from llmrun.compat.error import APIError as LlamaAPIError


class Question(Type):
    question: str = Context("a question")


class NovelQuestion(Type):
    question: str = Context("a novel question, with a radically different subject")


seeds = [Question(question="What is the tallest mountain?"), Question(question="How do bees make honey?")]
llm = LLM(name="generate-lamini")
llm.add_data([[q, NovelQuestion(question=other.question)] for q, other in zip(seeds, reversed(seeds))])

for attempt in range(2):
    try:
        novel = llm(
            input=seeds[0],
            output_type=NovelQuestion,
            temperature=0.0,
            model_name="EleutherAI/pythia-70m",
            max_tokens=32,
        )
        break
    except LlamaAPIError:
        print("Lamini API error, retrying")
novel.question = novel.question.strip()
print(novel.dict())
assert isinstance(novel, NovelQuestion)
