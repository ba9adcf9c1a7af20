# lamini-ai.github.io (2023) "Hyper-Parameter Tuning" page: load_question_answer, train(finetune_args=...).
# Cut: max_steps added to finetune_args to keep the run short.
from llmrun import QuestionAnswerModel

model = QuestionAnswerModel()
data = [
    {
        "question": "What types of documents are in the repository?",
        "answer": "Getting Started, Authentication.",
    },
    {"question": "How can I find the documentation I need?", "answer": "Go to https://lamini-ai.github.io/."},
]
model.load_question_answer(data)
model.train(finetune_args={"learning_rate": 1.0e-4, "max_steps": 1})
print(model.get_answer("How can I find the documentation I need?"))
