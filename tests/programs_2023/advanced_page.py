# lamini-ai.github.io (2023) "Advanced" page: random=True, sample(n=...), an output score (score="score").
from llmrun import Context, LLMEngine, Type


class AdAspects(Type):
    tone: str = Context("tone of the marketing copy")
    product_features: list = Context("product features to promote")
    audience: str = Context("target audience for the message")
    subject: str = Context("subject or topic of the message")
    goal: str = Context("goal of this marketing campaign and message")


class AdCopy(Type):
    h1: str = Context("google ad h1 tag")
    title: str = Context("google ad title tag")
    keywords: list = Context("keywords for the search engine")
    score: float = Context("score for the ad copy")


llm = LLMEngine(id="marketing")
aspects = AdAspects(
    tone="bold and bright, but not arrogant",
    product_features=["asian sauces and aromatics", "meal packs"],
    audience="suburban families",
    subject="delicious asian meals without going to a restaurant",
    goal="get them to try a free tasting kit",
)
ad_copy = llm(input=aspects, output_type=AdCopy, random=True, max_tokens=64)  # small: tiny test models
ad_copies = llm.sample(input=aspects, output_type=AdCopy, n=2, max_tokens=64)
ad_copy = llm(input=aspects, output_type=AdCopy, random=True, score="score", max_tokens=64)
print(ad_copy, ad_copies)
