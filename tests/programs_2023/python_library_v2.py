# lamini-ai.github.io (mid-2023) "Python library V2" page: LLM(name=...), a config dict, a typed call.
# Cut: the page's model_name="chat-gpt" (OpenAI behind Lamini's service) is left to the configured model;
# the "<API-KEY-HERE>" placeholder is filled from the environment, as a user fills in their key.
import os

from llmrun import LLM, Context, Type


class Animal(Type):
    name: str = Context("name of the animal")
    n_legs: int = Context("number of legs that animal has")


class Story(Type):
    story: str = Context("Story of an animal")


llm = LLM(name="animal_stories")
llm = LLM(
    name="my_llm_name",
    config={
        "production": {
            "key": os.environ.get("LAMINI_API_KEY", "<API-KEY-HERE>"),
        }
    },
)

llama_animal = Animal(name="Larry", n_legs=4)
llama_story = llm(llama_animal, output_type=Story)
print(llama_story)
assert isinstance(llama_story, Story)
