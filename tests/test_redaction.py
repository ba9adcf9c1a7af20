"""Key redaction: long keys anywhere, short keys only where they stand alone (not garbling every word)."""

from __future__ import annotations

from llmrun.errors import LLMRunError
from llmrun.redaction import Secret, redact


def test_a_long_key_is_redacted_anywhere_even_inside_other_text() -> None:
    key = Secret("sk-0123456789abcdef")
    assert redact("token=sk-0123456789abcdefXYZ") == "token=***XYZ"
    assert key.redact("Bearer sk-0123456789abcdef") == "Bearer ***"


def test_a_one_letter_key_does_not_garble_messages_but_is_still_hidden_where_it_stands_alone() -> None:
    key = Secret("a")
    message = str(LLMRunError("a bad request: the key was a, Bearer a"))
    assert message == "*** bad request: the key was ***, Bearer ***"  # words holding the letter stay whole
    assert key.redact("cat a") == "cat ***"


def test_a_short_key_next_to_word_characters_is_left_as_it_is() -> None:
    key = Secret("k3y")
    assert key.reveal() == "k3y"
    assert redact("monk3y k3y_x k3y") == "monk3y k3y_x ***"
