"""Output types used by the conformance suite: a spread of field kinds and constraints."""

from __future__ import annotations

import enum
from typing import Literal

from llmrun import Context, Type


class Flat(Type):
    answer: str = Context("a short factual answer")


class Numbers(Type):
    count: int = Context("how many", ge=0, le=100)
    ratio: float = Context("a ratio between 0 and 1", ge=0, le=1)


class Flags(Type):
    ok: bool = Context("whether it worked")
    label: str = Context("a label", max_length=12)


class Choice(Type):
    kind: Literal["fact", "opinion", "joke"] = Context("what kind of statement it is")


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


class WithEnum(Type):
    mood: Mood = Context("the mood")
    score: int = Context("a score from 1 to 5", ge=1, le=5)


class WithOptional(Type):
    note: str | None = Context("an optional note")
    year: int | None = Context("an optional year")


class WithLists(Type):
    tags: list[str] = Context("some tags")
    counts: list[int] = Context("some counts")


class Person(Type):
    name: str = Context("the person's name")
    age: int = Context("the person's age", ge=0, le=150)


class Nested(Type):
    person: Person = Context("who it is about")
    friends: list[Person] = Context("their friends")


class Mixed(Type):
    title: str = Context("a title")
    rating: float = Context("a rating", ge=0, le=5)
    genre: Literal["drama", "comedy"] = Context("the genre")
    sequel: bool = Context("whether it is a sequel")


#: Every schema; each backend must return valid instances of those it accepts.
ALL_SCHEMAS: list[type[Type]] = [
    Flat,
    Numbers,
    Flags,
    Choice,
    WithEnum,
    WithOptional,
    WithLists,
    Nested,
    Mixed,
]
#: Schemas with only scalar fields (str, int, float, bool), which every backend expresses natively.
SCALAR_SCHEMAS: list[type[Type]] = [Flat, Numbers, Flags]


class Question(Type):
    question: str = Context("a question about the world")
