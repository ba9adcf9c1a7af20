# A mid-2023 third-party translator: a class that subclasses LLM and calls itself with input=/output_type=.
from llmrun import LLM, Context, Type


class TranslatedText(Type):
    source_language: str = Context(
        "a word representing the language type of the source text, this word also needs to be in the target language"
    )
    translation: str = Context("translated text")


class TextToBeTranslated(Type):
    text: str = Context("a line of text in any language")
    target_language: str = Context(
        "target language type for the translated text; if this field is empty, pick a random target language"
    )


class LlaminiTranslator(LLM):
    def __init__(self):
        super().__init__(name="translator")

    def translate(self, text, language) -> tuple:
        input_text = TextToBeTranslated(text=text, target_language=language)
        result = self(input=input_text, output_type=TranslatedText)
        src_lang = self.remove_unexpected_str(result.source_language)
        return src_lang, result.translation

    @staticmethod
    def remove_unexpected_str(text):
        return text[: text.find("\n")] if "\n" in text else text


def main():
    translator = LlaminiTranslator()
    text = "Emmmm, test, test, hello, anybody home?"
    return translator.translate(text, "日本語")


translation = main()
print(translation)
assert isinstance(translation, tuple) and len(translation) == 2
