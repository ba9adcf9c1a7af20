# lamini-ai.github.io (2023) "Batching" page: submit a job, poll its status, read results, cancel.
import time

from llmrun import Context, LLMEngine, Type


class Question(Type):
    question: str = Context("a question")


class Answer(Type):
    answer: str = Context("the answer to the question")


llm = LLMEngine(id="batch_example")

inputs = [Question(question=f"What is {i} plus {i}?") for i in range(3)]
job = llm.submit_inference_job(inputs, Answer)
print(job)

status = llm.check_job_status(job["job_id"])
while status["status"] not in ("DONE", "ERRORED", "CANCELED"):
    time.sleep(0.05)
    status = llm.check_job_status(job["job_id"])
print(status)
assert status["status"] == "DONE"

results = llm.get_job_results(job["job_id"], Answer)
print(results)
assert len(results) == 3

llm.cancel_job(job["job_id"])  # "You'll still be able to get job results after canceling."
assert len(llm.get_job_results(job["job_id"], Answer)) == 3
