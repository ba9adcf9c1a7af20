# lamini-ai.github.io (2023) "Python library" page, its full example: set_data of inputs and pairs, improve.
# Cut: the page's LLMEngine(model_name="chat-gpt", ...) (OpenAI behind Lamini's service; see
# agent_datasource_save_data.py for what llmrun says about it).
from llmrun import Context, LLMEngine, Type


class Animal(Type):
    name: str = Context("name of the animal")
    n_legs: int = Context("number of legs that animal has")


class Story(Type):
    story: str = Context("Story of an animal")


llama_animal = Animal(name="Larry", n_legs=4)
centipede_animal = Animal(name="Cici", n_legs=100)
my_data = [llama_animal, centipede_animal]

dog_animal = Animal(name="Nacho", n_legs=4)
dog_speed = Story(
    story="There once was a cute doggo named Nacho. She was a golden retriever who liked to run. "
    "All four of her paws were adorable."
)
my_data.append([dog_animal, dog_speed])

llm = LLMEngine(id="animal_stories")
llama_story = llm(llama_animal, output_type=Story)
llm.set_data(my_data)
llm.improve(on="story", to="specify the number of legs in a subtle way")
story = llm(llama_animal, output_type=Story)
print(story)
assert isinstance(story, Story)
