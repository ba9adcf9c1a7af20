# docs/LLMEngine/*.md: __init__, __call__, save_data, train, evaluate, improve, sample and the batch jobs.
import time

from llmrun import Context, LLMEngine, Type


class Animal(Type):
    name: str = Context("name of the animal")
    n_legs: int = Context("number of legs that animal has")


class Speed(Type):
    speed: float = Context("how fast something can run")


llm = LLMEngine(id="my_llm_name")
llama_animal = Animal(name="Larry", n_legs=4)
centipede_animal = Animal(name="Cici", n_legs=100)
my_data = [llama_animal, centipede_animal]
dog_animal = Animal(name="Sally", n_legs=4)
dog_speed = Speed(speed=30.0)
my_data.append([dog_animal, dog_speed])
llm.save_data(my_data)
llm.save_data([[Animal(name="Bolt", n_legs=4), Speed(speed=45.0)]])

my_output = llm(llama_animal, output_type=Speed)
assert isinstance(my_output, Speed)
my_output = llm(input=llama_animal, output_type=Speed, input_type=Animal)
assert isinstance(my_output, Speed)

results = llm.train()
my_output = llm(llama_animal, output_type=Speed, model_name=results["model_name"])
print(results["job_id"], results["model_name"], my_output)

evaluation = llm.evaluate()
print(evaluation)
print(llm.evaluation)
assert evaluation == llm.evaluation
assert isinstance(evaluation["eval_results"], list)

llm.improve(on="speed", to="give the average speed, not the max speed")
assert isinstance(llm(dog_animal, output_type=Speed), Speed)

job = llm.submit_inference_job([llama_animal, centipede_animal, dog_animal], Speed)
status = llm.check_job_status(job["job_id"])
while status["status"] not in ("DONE", "ERRORED", "CANCELED"):
    time.sleep(0.05)
    status = llm.check_job_status(job["job_id"])
assert status["status"] == "DONE", status
speeds = llm.get_job_results(job["job_id"], Speed)
assert len(speeds) == 3 and all(isinstance(s, Speed) for s in speeds)
