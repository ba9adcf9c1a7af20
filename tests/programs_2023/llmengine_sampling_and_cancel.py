# docs/LLMEngine/sample.md and cancel_job.md: what only a sampling backend with local jobs can do.
from llmrun import Context, LLMEngine, Type


class Question(Type):
    question: str = Context("a question")


class Answer(Type):
    answer: str = Context("the answer")


llm = LLMEngine(id="example")
answers = llm.sample(Question(question="What is a llama?"), Answer, n=2)
print(answers)
assert 1 <= len(answers) <= 2 and all(isinstance(a, Answer) for a in answers)

job = llm.submit_inference_job([Question(question=f"question {i}") for i in range(40)], Answer)
llm.cancel_job(job["job_id"])
status = llm.check_job_status(job["job_id"])
assert status["status"] in ("CANCELED", "DONE"), status
print(status, len(llm.get_job_results(job["job_id"], Answer)))
