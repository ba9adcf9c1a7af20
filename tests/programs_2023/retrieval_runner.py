# v1.0.3's retrieval: index a folder of documents, then answer with the nearest chunks in the prompt.
import os
import tempfile

from llmrun import DirectoryLoader, LaminiIndex, MistralRunner, QueryEngine, RetrievalAugmentedRunner

docs = tempfile.mkdtemp()
with open(os.path.join(docs, "llamas.txt"), "w") as f:
    f.write(
        "Llamas live in the Andes mountains of South America. They are kept for wool and as pack animals."
    )
with open(os.path.join(docs, "markets.txt"), "w") as f:
    f.write("The stock market fell sharply today as investors worried about interest rates.")

rag = RetrievalAugmentedRunner(
    model_name="mistralai/Mistral-7B-Instruct-v0.1",
    chunk_size=64,
    step_size=32,
    k=2,
    system_prompt="Be brief.",
)
rag.load_data(docs)
rag.train()
print(rag("Where do llamas live?"))

index = LaminiIndex(DirectoryLoader(docs, batch_size=2))
nearest = index.query("Where do llamas live?", k=1)
print(nearest)
assert len(nearest) == 1
saved = tempfile.mkdtemp()
index.save_index(saved)
index = LaminiIndex.load_index(saved)
engine = QueryEngine(index, model_name="meta-llama/Llama-2-7b-chat-hf", k=1, system_prompt="Be brief.")
print(engine.answer_question("What fell today?"))

mistral = MistralRunner(system_prompt="Answer in one word.")
print(mistral("What animal carries packs in the Andes?"))
