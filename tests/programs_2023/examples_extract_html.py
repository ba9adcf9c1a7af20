# docs/Examples/extract_html.md: pull structured fields (a bare list among them) out of html.
from llmrun import Context, LLMEngine, Type


class Document(Type):
    html: str = Context("an html document")


class Extracted(Type):
    title: str = Context("the title of the page")
    links: list = Context("the links on the page")


extractor = LLMEngine(id="extract_html", model_name="EleutherAI/pythia-410m-deduped")
page = extractor(Document(html="<html><title>Llamas</title><a href='/a'>a</a></html>"), output_type=Extracted)
assert isinstance(page.links, list)
print(page.dict())
