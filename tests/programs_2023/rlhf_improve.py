# lamini-ai/lamini 2023 tests (test_rlhf.py): add_data of [input, output] pairs, improve(), a sampled call.
# Cut: submit_job(rlhf=True, generate_finetuning_data=True) and the wait for the service's tuned model
# (query_get_models): Lamini-service internals with no public equivalent.
from llmrun import Context, LLMEngine, Type


class Tweet(Type):
    tweet: str = Context("a viral tweet")
    likes: int = Context("likes the tweet gets")
    retweets: int = Context("retweets the tweet gets")


class User(Type):
    username: str = Context("A user's handle on twitter")


def get_tweet_data():
    return [
        [
            User(username="syswarren"),
            Tweet(tweet="Tools aren't going to make you great designers.", likes=1000, retweets=81),
        ],
        [
            User(username="TheJackForge"),
            Tweet(tweet="You should probably learn how to use Figma.", likes=341, retweets=28),
        ],
        [
            User(username="lexfridman"),
            Tweet(tweet="ChatGPT puts a mirror to humanity.", likes=11100, retweets=874),
        ],
    ]


llm = LLMEngine(id="tweets", model_name="EleutherAI/pythia-70m")

llm.add_data(get_tweet_data()[:2])

llm.improve(
    on="tweet",
    to="make it shorter",
    good_examples=[Tweet(tweet="Solopreneurs, don't chase more clients.", likes=45, retweets=10)],
    bad_examples=[
        Tweet(tweet="They tell you to chase more clients. Your goal is BETTER clients.", likes=5, retweets=1)
    ],
)

result = llm(input=User(username="lawrencekingyo"), output_type=Tweet)
print(result)
assert isinstance(result, Tweet)
