# v1.0.3's zero-shot classifier: describe the classes, let the model write examples, classify.
import os
import tempfile

from llmrun import BinaryLaminiClassifier, LaminiClassifier

classifier = LaminiClassifier(augmented_example_count=5)
classifier.add_data_to_class("cat", ["the cat meows and purrs", "a kitten chases a ball of yarn"])
classifier.add_data_to_class("dog", ["the dog barks and wags its tail", "a puppy fetches the stick"])
classifier.prompt_train(
    {
        "cat": "Sentences about cats: meowing, purring, whiskers.",
        "dog": "Sentences about dogs: barking, fetching, wagging tails.",
    }
)
assert len(classifier.get_data()["cat"]) >= 5
print(classifier.predict(["the cat purrs", "the dog barks loudly"]))
print(classifier.classify("a puppy wags its tail", top_n=1))
probs = classifier.predict_proba(["the cat meows"])[0]
assert abs(sum(probs) - 1.0) < 1e-6

path = os.path.join(tempfile.mkdtemp(), "classifier.json")
classifier.save(path)
loaded = LaminiClassifier.load(path)
assert loaded.predict(["the cat meows"]) == classifier.predict(["the cat meows"])

binary = BinaryLaminiClassifier()
binary.add_positive_examples(["I love it", "great product, works well"])
binary.add_negative_examples(["I hate it", "terrible, broke after a day"])
binary.train()
print(binary.predict(["works great, I love it"]))
