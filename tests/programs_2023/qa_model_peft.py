# lamini-ai/lamini 2023 tests (test_peft_train_inference.py): tune with PEFT, then load the new model by name.
from llmrun import QuestionAnswerModel

data = [
    {"question": "What kind of exercise is good for me?", "answer": "Running"},
    {"question": "hello", "answer": "hello"},
    {"question": "What is the best way to get fit?", "answer": "Running"},
    {"question": "Whats your name?", "answer": "My name is Llama"},
]
model = QuestionAnswerModel("EleutherAI/pythia-70m")
model.load_question_answer(data)
model.train(enable_peft=True, finetune_args={"max_steps": 1})
print("new model: " + model.model_name)
new_model = QuestionAnswerModel(model.model_name)
answer = new_model.get_answer("What kind of exercise is good for me?")
print(answer)
assert isinstance(answer, str)
