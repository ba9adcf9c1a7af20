# lamini-ai.github.io (2023) "Authentication" page: key (and a self-hosted server's url) in the config dict.
# The page's "<YOUR-KEY-HERE>" / "<YOUR-SERVER-URL-HERE>" placeholders are filled from the environment,
# as a user fills in theirs (the tests point them at the fake server).
import os

from llmrun import Context, LLMEngine, Type

llm = LLMEngine(
    id="marketing",
    config={
        "production": {
            "key": os.environ.get("LAMINI_API_KEY", "<YOUR-KEY-HERE>"),
        }
    },
)

llm = LLMEngine(
    id="marketing",
    config={
        "production": {
            "key": os.environ.get("LAMINI_API_KEY", "<YOUR-KEY-HERE>"),
            "url": os.environ.get("LAMINI_API_URL", "<YOUR-SERVER-URL-HERE>:<YOUR-SERVER-PORT-HERE>"),
        }
    },
)


class Test(Type):
    test_string: str = Context("just a test")


print(llm(Test(test_string="testing 123"), output_type=Test))
