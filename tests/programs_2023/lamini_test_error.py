# lamini-ai/lamini 2023 tests (test_error.py): a bad model_name raises llama.error.ModelNameError.
import llmrun as llama
from llmrun import Context, LLMEngine, Type


class Story(Type):
    story: str = Context("the body of the story")


class Tone(Type):
    tone: str = Context("The tone of the story")


class Descriptors(Type):
    likes: str = Context("things you like")
    favorite_song: str = Context("your favorite song")
    tone: Tone = Context("tone of the story")


descriptors = Descriptors(
    likes="llamas and other animals",
    favorite_song="never let me go",
    tone=Tone(tone="cheeky"),
)
llm = LLMEngine(id="test_error")
caught = None
try:
    story1 = llm(input=descriptors, output_type=Story, model_name="Grrr")
except Exception as e:
    print(e)
    if isinstance(e, llama.error.ModelNameError):
        caught = e
    else:
        raise e
assert caught is not None
