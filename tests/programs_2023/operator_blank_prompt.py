# A third-party "operator" framework built on llama (2023): a BlankPrompt engine, stop_tokens, `.output`.
# Import changed: `from llama.prompts.blank_prompt import BlankPrompt` -> llmrun.compat.prompts.
from textwrap import dedent

from llmrun import LLMEngine
from llmrun.compat.prompts import BlankPrompt


class Operator:
    def __init__(self):
        self.operations = {}
        self.prompt = BlankPrompt()
        self.model_name = "meta-llama/Llama-2-7b-chat-hf"
        self.model = LLMEngine(id="operator-fw", prompt=self.prompt, model_name=self.model_name)

    def add_operation(self, operation, description=None):
        self.operations[operation.__name__] = {
            "action": operation,
            "description": description or operation.__doc__,
        }

    def select_operations(self, query):
        operation_descriptions = [
            f"'{name}': '{val['description']}'" for name, val in self.operations.items()
        ]
        prompt_template = dedent(
            """\
            <s>[INST] <<SYS>>
            You are a fitness bot who will infer from user's message what actions should be carried out.
            <</SYS>>
            'User message': {query}
            'Tools available': {operations}
            [/INST]
            """
        )
        prompt_str = prompt_template.format_map({"query": query, "operations": str(operation_descriptions)})
        model_response = self.model(
            input=self.prompt.input(input=prompt_str),
            output_type=self.prompt.output,
            stop_tokens=["\n", ":"],
        )
        print("\n\nresp:", model_response.output)
        return model_response.output


def book(query):
    """to book an appointment"""
    return "booked"


operator = Operator()
operator.add_operation(book)
selected = operator.select_operations("I feel a striking pain in my chest.")
assert isinstance(selected, str) and "\n" not in selected and ":" not in selected
