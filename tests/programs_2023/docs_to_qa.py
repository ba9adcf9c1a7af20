# v1.0.3's docs-to-QA pipeline: questions about documents, answers to them, a model tuned on the pairs.
import glob
import os
import tempfile

from llmrun import (
    DocsToQA,
    finetune_qa,
    run_model,
    run_prompt_engineer_answers,
    run_prompt_engineer_questions,
)

docs = tempfile.mkdtemp()
with open(os.path.join(docs, "llamas.txt"), "w") as f:
    f.write("Llamas live in the Andes. They carry packs and give wool.")

model_name = "meta-llama/Llama-2-7b-chat-hf"
questions = run_prompt_engineer_questions(docs, model_name=model_name, verbose=False)
assert questions[0]
questions_dir = sorted(glob.glob("outputs/questions_*"))[-1]
answers = run_prompt_engineer_answers(questions_dir, docs_dirpath=docs, model_name=model_name, verbose=False)
assert answers[0][0][0] == questions[0][0]
qa_dir = sorted(glob.glob("outputs/qa_*"))[-1]
tuned = finetune_qa(qa_dir, docs_dirpath=docs, model_name=model_name, is_public=True)
print(tuned)
print(run_model("Where do llamas live?", model_name=tuned))

llm = DocsToQA(docs, model_name=model_name)
llm.prompt_engineer_questions(verbose=False)
print(llm.run("What do llamas give?", doc_id=0))
