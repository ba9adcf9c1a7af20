# A third-party agent app (2023, a prefect flow): documents with a dict field saved as an engine's data.
# Cut: prefect/prisma and the app's DataLoader; two in-memory documents stand in for a datasource.
import asyncio
from types import SimpleNamespace

from llmrun import Context, LLMEngine, Type


class Document(Type):
    text: str = Context("A document")
    metadata: dict = Context("Metadata associated with the document")


async def handle_finetune(data):
    llm = LLMEngine(
        id="QA",
        config={"production.key": "<LAMINI_API_KEY>"},
        model_name="chat/gpt-3.5-turbo",
    )
    documents = [Document(text=document.page_content, metadata=document.metadata) for document in data]
    return llm.save_data(documents)


data = [
    SimpleNamespace(page_content="Llamas are camelids.", metadata={"source": "a.txt", "page": 1}),
    SimpleNamespace(page_content="Alpacas are smaller.", metadata={"source": "b.txt"}),
]
print(asyncio.run(handle_finetune(data)))
