# lamini-ai.github.io (2023) "Error Handling" page: a Type with a bare `list` field, Context on each field,
# and the 2023 error names to catch.
from llmrun import Context, LLMEngine, Type
from llmrun.compat.error import APIError, AuthenticationError, ServerTimeoutError


class AdAspects(Type):
    tone: str = Context("tone of the marketing copy")
    product_features: list = Context("product features to promote")
    audience: str = Context("target audience for the message")
    subject: str = Context("subject or topic of the message")
    goal: str = Context("goal of this marketing campaign and message")


class AdCopy(Type):
    title: str = Context("google ad title tag")


llm = LLMEngine(id="marketing")
aspects = AdAspects(
    tone="bold and bright, but not arrogant",
    product_features=["asian sauces and aromatics", "meal packs"],
    audience="suburban families",
    subject="delicious asian meals without going to a restaurant",
    goal="get them to try a free tasting kit",
)
try:
    ad_copy = llm(input=aspects, output_type=AdCopy, max_tokens=64)  # small: the tests use tiny models
except ServerTimeoutError:
    print("Timed out: use the batching interface")
    raise
except AuthenticationError:
    print("Set your key: see the auth page")
    raise
except APIError as e:
    print("Internal server error, report it:", e)
    raise
print(ad_copy)
assert isinstance(ad_copy, AdCopy)
