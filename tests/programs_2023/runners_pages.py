# docs/runners/*.md: BasicModelRunner, InputOutputRunner, QuestionAnswerModel, LlamaV2Runner, AutocompleteRunner.
from llmrun import (
    AutocompleteRunner,
    BasicModelRunner,
    Context,
    InputOutputRunner,
    LlamaV2Runner,
    QuestionAnswerModel,
    Type,
)

model = BasicModelRunner("EleutherAI/pythia-410m-deduped")
output = model("How can I add data to Lamini?")
assert isinstance(output, str)
data = [
    {"input": "What documents are there?", "output": "Getting Started, Authentication and the LLM Engine."},
    {"input": "How do I set up the repository?", "output": "Install the python package."},
    {"input": "Is there a REST API?", "output": "Yes, a language agnostic one."},
]
model.load_data(data)
model.train()
print(model.evaluate())
print(model("How can I add data to Lamini?"))
outputs = model(["How can I add data?", "Is there a REST API?"])
assert [o["input"] for o in outputs] == ["How can I add data?", "Is there a REST API?"]
assert all(isinstance(o["output"], str) for o in outputs)


class Input(Type):
    instruction: str = Context("instruction")
    is_question: int = Context("1 if the instruction is a question")


class Output(Type):
    response: str = Context("response to instruction")
    is_positive: int = Context("1 if the response is positive")


io_model = InputOutputRunner(
    input_type=Input, output_type=Output, model_name="EleutherAI/pythia-410m-deduped"
)
print(io_model(Input(instruction="Tell me how to add data to Lamini", is_question=0)))
io_model.load_data(
    [
        [
            Input(instruction="What kind of exercise is good for me?", is_question=1),
            Output(response="Running", is_positive=1),
        ]
    ]
)
io_model.load_data_from_paired_dicts(
    [
        {
            "input": {"instruction": "Is swimming good?", "is_question": 1},
            "output": {"response": "Yes", "is_positive": 1},
        }
    ]
)
io_model.load_data_from_paired_lists(
    [[{"instruction": "Cycling?", "is_question": 1}, {"response": "Sure", "is_positive": 1}]]
)
io_model.train()
new_input = Input(instruction="What kind of exercise is superduper for me?", is_question=1)
assert isinstance(io_model(new_input), Output)

qa = QuestionAnswerModel()
qa.load_question_answer(
    [
        {"question": "What's your favorite animal?", "answer": "dog"},
        {"question": "What's your favorite color?", "answer": "blue"},
    ]
)
qa.train()
answer = qa.get_answer("What's your favorite animal?")
assert isinstance(answer, str)
answers = qa.get_answers(["What's your favorite animal?", "What's your favorite color?"])
assert answers[1]["question"] == "What's your favorite color?"

llama = LlamaV2Runner()
print(llama("How can I add data to Lamini?"))
llama.load_data(
    [
        {"user": "What's your favorite animal?", "output": "dog"},
        {"user": "What's your favorite color?", "output": "blue", "system": "Answer in one word."},
    ]
)
llama.train()
assert isinstance(llama("What's your favorite animal?", system_prompt="Be short."), str)

autocomplete = AutocompleteRunner()
autocomplete.load_data_from_strings(
    ["The quick brown fox jumps over the lazy dog", "Llamas live in the Andes"]
)
autocomplete.train()
rows = autocomplete.evaluate_autocomplete(["The quick brown fox", "Llamas live"])
assert {"input", "target_output", "predicted_output"} <= set(rows[0])
