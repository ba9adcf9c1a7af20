# A third-party customer-support "operator" (2023): LlamaV2Runner() called with a per-call system_prompt.
# Cut: the Operator base class's routing (its own tool-selection model) and argparse.
import os
import re

from llmrun import LlamaV2Runner

os.environ["LLAMA_ENVIRONMENT"] = "PRODUCTION"


class CustomerSupportOperator:
    def __init__(self):
        self.chat_model = LlamaV2Runner()

    def gather_info(self, message: str):
        model_response = self.chat_model(
            message,
            system_prompt="Your job is to get more details on the user's issue. Use 1 sentence.",
        )
        clean_response = re.sub(r"(\.|\?){2,}", r"\1", model_response)
        return f"Continuing the conversation with the user.\nresponse=\n{clean_response}"


operator = CustomerSupportOperator()
for query in ["can't login", "hi there I'd like to understand my bill"]:
    print(operator.gather_info(query))
