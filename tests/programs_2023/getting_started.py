# lamini-ai.github.io (2023) "Getting Started" page: the key passed in the config dict, then the basic test.
# The "<YOUR-KEY-HERE>" placeholder is filled from the environment, as a user fills in their key.
import os

from llmrun import Context, LLMEngine, Type

llm = LLMEngine(
    id="example_llm",
    config={"production.key": os.environ.get("LAMINI_API_KEY", "<YOUR-KEY-HERE>")},
)


class Test(Type):
    test_string: str = Context("just a test")


print(llm)
llm = LLMEngine(id="my_test")

test = Test(test_string="testing 123")
out = llm(test, output_type=Test)
print(out)
assert isinstance(out, Test) and isinstance(out.test_string, str)
