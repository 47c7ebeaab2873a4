"""A small template grammar for generating labelled sentences, in the spirit of Chatito.

The syntax (documented for users in docs/synthetic.md)::

    # a comment
    %[track_package] -> You can follow your parcel from the link in your shipping email.
        where is my @[item]
        (has|did) my @[item] ship[ yet]
    ~[please]
        please
        could you
    @[item]
        order
        parcel

A header at column 0 opens a definition: ``%[name]`` an intent (optionally ``-> response``),
``~[name]`` an alias, ``@[name]`` a slot. Indented lines below it are its alternatives. Inside a
line, ``~[alias]`` and ``@[slot]`` insert one of their alternatives (``~[alias?]`` may insert
nothing), ``(a|b|c)`` picks one of the inline alternatives and ``[words]`` is optional.

Each intent compiles to a pool of distinct sentences: every expansion when there are few enough,
otherwise a seeded random sample of ``MAX_POOL_PER_INTENT`` of them.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
from collections.abc import Iterator

MAX_POOL_PER_INTENT = 4_000
"""Most distinct sentences kept per intent; bounds memory whatever the grammar's size."""

MAX_GRAMMAR_CHARS = 200_000
"""Longest grammar text accepted."""

_HEADER = re.compile(r"^([%~@])\[([A-Za-z0-9_]+)\]\s*(?:->\s*(.*?))?\s*$")
_NAME = re.compile(r"[A-Za-z0-9_]+")
_KIND_WORD = {"%": "intent", "~": "alias", "@": "slot"}


class GrammarError(ValueError):
    """A grammar that cannot be compiled; `line` is 1-based (0 when not about one line)."""

    def __init__(self, message: str, line: int = 0, hint: str = "") -> None:
        where = f"grammar line {line}: " if line else "grammar: "
        super().__init__(where + message)
        self.line = line
        self.hint = hint or "See docs/synthetic.md for the template grammar syntax."


# Parsed sentence structure: a sequence of parts, each a literal, a reference, a choice or an
# optional sequence.
@dataclasses.dataclass(frozen=True)
class Ref:
    """``~[name]``, ``~[name?]`` or ``@[name]``."""

    kind: str
    name: str
    optional: bool
    line: int


@dataclasses.dataclass(frozen=True)
class Choice:
    """``(a|b|c)``: one of the alternatives."""

    alternatives: tuple[tuple, ...]


@dataclasses.dataclass(frozen=True)
class Optional:
    """``[words]``: the words or nothing."""

    parts: tuple


@dataclasses.dataclass
class _Definition:
    kind: str
    name: str
    response: str
    line: int
    bodies: list[tuple[tuple, int]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Intent:
    """A compiled intent: its canonical response and its pool of distinct sentences."""

    name: str
    response: str
    sentences: tuple[str, ...]
    possible_sentences: int
    """How many sentences the templates can make in all (the pool may be a sample of them)."""


@dataclasses.dataclass(frozen=True)
class Grammar:
    """A compiled grammar: its intents, in definition order."""

    intents: tuple[Intent, ...]

    def intent(self, name: str) -> Intent:
        """The intent called `name`."""
        for intent in self.intents:
            if intent.name == name:
                return intent
        raise KeyError(name)


def parse_grammar(text: str, seed: int = 0) -> Grammar:
    """Compile grammar `text`; raises GrammarError with the line of the first problem."""
    if len(text) > MAX_GRAMMAR_CHARS:
        raise GrammarError(f"is {len(text)} characters; the limit is {MAX_GRAMMAR_CHARS}")
    definitions = _read_definitions(text)
    _check_references(definitions)
    expander = _Expander(definitions, random.Random(seed))
    intents = tuple(
        expander.intent(definition) for definition in definitions.values() if definition.kind == "%"
    )
    if not intents:
        raise GrammarError(
            "defines no intent",
            hint="Start an intent with a line like '%[check_balance] -> Your balance is ...' "
            "and indent its sentences below it.",
        )
    return Grammar(intents)


def _read_definitions(text: str) -> dict[tuple[str, str], _Definition]:
    definitions: dict[tuple[str, str], _Definition] = {}
    current: _Definition | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            current = _header(line, number, definitions)
            continue
        if current is None:
            raise GrammarError(
                "indented line before any definition",
                number,
                "Put a header such as '%[intent_name]' or '~[alias]' at column 0 above it.",
            )
        current.bodies.append((_parse_sequence(line.strip(), number), number))
    for definition in definitions.values():
        if not definition.bodies:
            raise GrammarError(
                f"{_KIND_WORD[definition.kind]} {definition.name!r} has no alternatives",
                definition.line,
                "Indent at least one line below the header.",
            )
    return definitions


def _header(line: str, number: int, definitions: dict) -> _Definition:
    match = _HEADER.match(line)
    if not match:
        raise GrammarError(
            f"cannot read header {line!r}",
            number,
            "Headers are '%[intent]' (optionally '-> response'), '~[alias]' or '@[slot]' at "
            "column 0; sentences are indented below them.",
        )
    kind, name, response = match.group(1), match.group(2), match.group(3) or ""
    if response and kind != "%":
        raise GrammarError(f"only intents take a '-> response', not {line!r}", number)
    key = (kind, name)
    if key in definitions:
        raise GrammarError(
            f"{_KIND_WORD[kind]} {name!r} is defined twice (first on line {definitions[key].line})",
            number,
        )
    definitions[key] = _Definition(kind, name, response.strip(), number)
    return definitions[key]


def _parse_sequence(text: str, line: int) -> tuple:
    parts, _end = _parse_until(text, 0, line, stop="")
    return parts


def _parse_until(text: str, position: int, line: int, stop: str) -> tuple[tuple, int]:
    """Parse from `position` to one of the `stop` characters (or the end)."""
    parts: list = []
    literal: list[str] = []

    def flush() -> None:
        if literal:
            parts.append("".join(literal))
            literal.clear()

    while position < len(text):
        char = text[position]
        if char in stop:
            flush()
            return tuple(parts), position
        if char in "~@" and text.startswith("[", position + 1):
            flush()
            ref, position = _parse_reference(text, position, line)
            parts.append(ref)
        elif char == "(":
            flush()
            choice, position = _parse_choice(text, position, line)
            parts.append(choice)
        elif char == "[":
            flush()
            inner, end = _parse_until(text, position + 1, line, stop="]")
            if end >= len(text):
                raise GrammarError(f"'[' without its ']' in {text!r}", line)
            parts.append(Optional(inner))
            position = end + 1
        elif char in ")]|":
            raise GrammarError(
                f"unexpected {char!r} in {text!r}",
                line,
                "'(' ... '|' ... ')' picks an alternative and '[' ... ']' marks an optional part; "
                "they must be balanced.",
            )
        else:
            literal.append(char)
            position += 1
    if stop:
        return tuple(parts), position
    flush()
    return tuple(parts), position


def _parse_reference(text: str, position: int, line: int) -> tuple[Ref, int]:
    kind = text[position]
    end = text.find("]", position)
    if end < 0:
        raise GrammarError(f"'{kind}[' without its ']' in {text!r}", line)
    name = text[position + 2 : end]
    optional = name.endswith("?") and kind == "~"
    name = name.removesuffix("?") if optional else name
    if not _NAME.fullmatch(name):
        raise GrammarError(
            f"bad reference {text[position : end + 1]!r}",
            line,
            "References are '~[alias]', '~[alias?]' (optional) or '@[slot]', with names made "
            "of letters, digits and '_'.",
        )
    return Ref(kind, name, optional, line), end + 1


def _parse_choice(text: str, position: int, line: int) -> tuple[Choice, int]:
    alternatives = []
    position += 1
    while True:
        inner, position = _parse_until(text, position, line, stop="|)(")
        if position >= len(text):
            raise GrammarError(f"'(' without its ')' in {text!r}", line)
        if text[position] == "(":
            raise GrammarError(
                f"nested '(' in {text!r}",
                line,
                "Alternatives cannot nest; move the inner choice into an alias '~[name]'.",
            )
        alternatives.append(inner)
        if text[position] == ")":
            return Choice(tuple(alternatives)), position + 1
        position += 1


def _references(parts: tuple) -> Iterator[Ref]:
    for part in parts:
        if isinstance(part, Ref):
            yield part
        elif isinstance(part, Choice):
            for alternative in part.alternatives:
                yield from _references(alternative)
        elif isinstance(part, Optional):
            yield from _references(part.parts)


def _check_references(definitions: dict[tuple[str, str], _Definition]) -> None:
    for definition in definitions.values():
        for body, _line in definition.bodies:
            for ref in _references(body):
                if (ref.kind, ref.name) not in definitions:
                    known = sorted(name for kind, name in definitions if kind == ref.kind)
                    raise GrammarError(
                        f"unknown {_KIND_WORD[ref.kind]} {ref.kind}[{ref.name}]",
                        ref.line,
                        f"Defined {_KIND_WORD[ref.kind]}es: {', '.join(known) or 'none'}."
                        if ref.kind == "~"
                        else f"Defined slots: {', '.join(known) or 'none'}.",
                    )
    _check_cycles(definitions)


def _check_cycles(definitions: dict[tuple[str, str], _Definition]) -> None:
    state: dict[tuple[str, str], str] = {}

    def visit(key: tuple[str, str], line: int) -> None:
        if state.get(key) == "done":
            return
        if state.get(key) == "visiting":
            raise GrammarError(
                f"{key[0]}[{key[1]}] refers to itself",
                line,
                "Aliases and slots cannot be recursive.",
            )
        state[key] = "visiting"
        for body, body_line in definitions[key].bodies:
            for ref in _references(body):
                visit((ref.kind, ref.name), body_line)
        state[key] = "done"

    for key, definition in definitions.items():
        visit(key, definition.line)


class _Expander:
    """Turns parsed definitions into lists of strings, sampling where they would be too many."""

    VALUES_LIMIT = 2_000
    """Most distinct strings kept for one alias, slot or inline choice."""

    def __init__(self, definitions: dict[tuple[str, str], _Definition], rng: random.Random) -> None:
        self._definitions = definitions
        self._rng = rng
        self._values: dict[tuple[str, str], list[str]] = {}

    def intent(self, definition: _Definition) -> Intent:
        pool: dict[str, None] = {}
        per_template = max(1, MAX_POOL_PER_INTENT // len(definition.bodies))
        possible = 0
        for body, _line in definition.bodies:
            possible += self._size(body)
            for sentence in self._strings(body, per_template):
                pool.setdefault(_tidy(sentence))
        pool.pop("", None)
        return Intent(definition.name, definition.response, tuple(pool), possible)

    def values(self, key: tuple[str, str]) -> list[str]:
        if key not in self._values:
            seen: dict[str, None] = {}
            for body, _line in self._definitions[key].bodies:
                for value in self._strings(body, self.VALUES_LIMIT):
                    seen.setdefault(_tidy(value))
            self._values[key] = list(seen)
        return self._values[key]

    def _options(self, part: object) -> list[str]:
        if isinstance(part, str):
            return [part]
        if isinstance(part, Ref):
            values = self.values((part.kind, part.name))
            return ["", *values] if part.optional else values
        if isinstance(part, Choice):
            return [
                text
                for alternative in part.alternatives
                for text in self._strings(alternative, self.VALUES_LIMIT)
            ]
        assert isinstance(part, Optional)
        return ["", *self._strings(part.parts, self.VALUES_LIMIT)]

    def _size(self, parts: tuple) -> int:
        size = 1
        for part in parts:
            if isinstance(part, Ref):
                size *= len(self.values((part.kind, part.name))) + part.optional
            elif isinstance(part, Choice):
                size *= sum(self._size(alternative) for alternative in part.alternatives)
            elif isinstance(part, Optional):
                size *= 1 + self._size(part.parts)
        return size

    def _strings(self, parts: tuple, limit: int) -> list[str]:
        """Every expansion of `parts` when there are at most `limit`, else `limit` samples."""
        options = [self._options(part) for part in parts]
        if self._size(parts) <= limit:
            return ["".join(combination) for combination in itertools.product(*options)]
        choice = self._rng.choice
        return ["".join(choice(choices) for choices in options) for _ in range(limit)]


def _tidy(sentence: str) -> str:
    """Collapse the spaces that empty optional parts leave behind."""
    return " ".join(sentence.replace(" ,", ",").split())
