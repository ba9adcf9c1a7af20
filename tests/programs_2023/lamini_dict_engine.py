# v1.0.3's dict engine `Lamini`, as its own docstring shows it (llama/engine/lamini.py): dict inputs,
# output_type descriptions, a typed key ("Answer#bool"), a batch, stop_tokens, and data as dict pairs.
from llmrun import Lamini

llm = Lamini(id="dict_example", model_name="EleutherAI/pythia-70m")

# Ex 1
input_value = {"question": "What is the hottest day of the year?"}
output_type = {"Answer": "An answer to the question"}
out = llm(input_value, output_type)
print(out)
assert set(out) == {"Answer"} and isinstance(out["Answer"], str)

# Ex 2
input_value = {"question": "What is the hottest day of the year?", "question2": "What is for lunch?"}
output_type = {"Answer": "An answer to the question", "Answer2": "An answer to the question2"}
print(llm(input_value, output_type, stop_tokens="\n"))

# a typed output key, and a batch
checked = llm(
    [{"question": "Is the sky blue?"}, {"question": "Is fire cold?"}],
    {"Answer#bool": "whether the answer is yes"},
    max_tokens=16,
)
print(checked)
assert [set(c) for c in checked] == [{"Answer"}, {"Answer"}]
assert all(isinstance(c["Answer"], bool) for c in checked)

llm.save_data(
    [
        [{"question": "Is the sky blue?"}, {"Answer": "yes"}],
        [{"question": "Is fire cold?"}, {"Answer": "no"}],
    ]
)
assert len(llm.examples) == 2  # the pairs train; a call builds the same Types from the same dicts
