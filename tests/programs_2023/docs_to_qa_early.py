# A mid-2023 third-party DocsToQA built on LlamaV2Runner(system_prompt=...) (before v1.0.3 shipped its own):
# one runner asks questions about each chunk of a CSV, another answers them.
# Cut: the pubmed dataset download (a two-row docs.csv is written instead, in a scratch folder).
import os
import tempfile

import pandas as pd
from tqdm import tqdm

from llmrun import LlamaV2Runner


class DocsToQA:
    def __init__(self, docs_path):
        self.docs = {}
        self.chunk_docs(docs_path)
        self.question_prompt = "You are an inquisitive expert, whose job is to ask questions. You write factual questions or requests about a text."
        self.answer_prompt = (
            "You are an expert. You answer questions factually, grounded in given reference material."
        )
        self.question_llm = LlamaV2Runner(system_prompt=self.question_prompt)
        self.answer_llm = LlamaV2Runner(system_prompt=self.answer_prompt)
        self.questions = {}
        self.answers = {}

    def chunk_docs(self, docs_path):
        df = pd.read_csv(docs_path)
        for i, chunk in df.iterrows():
            self.docs[i] = chunk["text"]

    def run_questions(
        self,
        docs,
        question_llm,
        prompt_suffix="Write a question about the above:",
        prompt_sep="\n",
        verbose=False,
    ):
        questions = {}
        for docs_id, chunk in tqdm(docs.items()):
            prompt = f"{chunk}{prompt_sep}{prompt_suffix}"
            output = question_llm(chunk)
            questions[docs_id] = output
            if verbose:
                print("=============PROMPT================")
                print(prompt)
                print("============SYSTEM PROMPT=================")
                print(question_llm.system_prompt)
                print("============GENERATED QUESTION================")
                print(output)
        return questions

    def set_questions(self):
        self.questions = self.run_questions(self.docs, self.question_llm)

    def prompt_engineer_questions(self, prompt, prompt_suffix=None):
        question_llm = LlamaV2Runner(system_prompt=prompt)
        if prompt_suffix:
            return self.run_questions(self.docs, question_llm, prompt_suffix=prompt_suffix, verbose=True)
        return self.run_questions(self.docs, question_llm, verbose=True)

    def run_answers(self, docs, questions, answer_llm, prompt_sep="\n", verbose=False):
        answers = {}
        for docs_id, chunk in tqdm(docs.items()):
            if docs_id not in questions:
                continue
            prompt = f"{questions[docs_id]}{prompt_sep}{chunk}"
            answers[docs_id] = answer_llm(prompt)
        return answers

    def set_answers(self):
        assert self.questions, "You must set questions first"
        self.answers = self.run_answers(self.docs, self.questions, self.answer_llm)


def main():
    os.chdir(tempfile.mkdtemp())
    pd.DataFrame(
        ["Aspirin lowers fever and eases pain.", "Insulin regulates blood sugar."], columns=["text"]
    ).to_csv("docs.csv", index=False)
    llm = DocsToQA("docs.csv")
    llm.prompt_engineer_questions(llm.question_prompt)
    llm.set_questions()
    llm.set_answers()
    return llm


llm = main()
assert len(llm.answers) == 2 and all(isinstance(a, str) for a in llm.answers.values())
