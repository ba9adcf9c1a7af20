# docs/Examples/*.md: playground, question answering, extract html, write article, Llama 2 and code guru.
from llmrun import Context, InputOutputRunner, LlamaV2Runner, LLMEngine, QuestionAnswerModel, Type


class Question(Type):
    question: str = Context("a question")


class Answer(Type):
    answer: str = Context("the response to the question")


llm = LLMEngine(id="QA")
data = [
    [Question(question="What is Lamini?"), Answer(answer="An LLM engine for developers.")],
    [Question(question="How do I add data?"), Answer(answer="Call llm.save_data.")],
]
llm.save_data(data)
question = Question(question="How can I add data to Lamini?")
answer = llm(input=question, output_type=Answer)
print(answer)
assert isinstance(answer.answer, str)


class ArticleInput(Type):
    topic: str = Context("the topic of the article")
    audience: str = Context("who reads it")


class ArticleOutput(Type):
    article: str = Context("a short article on the topic")


writer = InputOutputRunner(input_type=ArticleInput, output_type=ArticleOutput)
article = writer(ArticleInput(topic="llamas", audience="children"))
assert isinstance(article, ArticleOutput)
articles = writer(
    [ArticleInput(topic="alpacas", audience="farmers"), ArticleInput(topic="yaks", audience="all")]
)
assert len(articles) == 2

chat = LlamaV2Runner()
print(chat("What is the capital of France?"))
outputs = chat(["Hi", "How are you?"])
assert outputs[0]["input"] == "Hi"

qa = QuestionAnswerModel()
qa.load_question_answer(
    [
        {"question": "What documents are there?", "answer": "Getting Started, Authentication and more."},
        {"question": "How do I set it up?", "answer": "Install the python package."},
        {"question": "Can I use my own data?", "answer": "Yes, as question and answer pairs."},
    ]
)
qa.train()
qa.evaluate()
print(qa.evaluation)
print(qa.get_answer("How do I fine-tune a model?"))


class Function(Type):
    name: str = Context("name of a python function")
    code: str = Context("text of the python function")


class CodeQuestion(Type):
    question: str = Context("a question about code")


class CodeAnswer(Type):
    description: str = Context("")


guru = LLMEngine(id="code_QA")
guru.save_data([Function(name="save_data", code="def save_data(self, data): ...")])
code_answer = guru(input=CodeQuestion(question="LLMEngine.save_data"), output_type=CodeAnswer)
print(code_answer.description)
