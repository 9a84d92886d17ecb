"""The part of IoT Hub's query language that configuration target conditions and device twin queries use.

Written from the IoT Hub query language docs, not from any implementation:

- a target condition is a WHERE clause without the WHERE (``tags.ring = 'canary' AND status = 'enabled'``);
  ``*`` alone targets every device;
- a query is ``SELECT <* | path, ...> FROM devices|devices.modules [WHERE <condition>]``: device queries are
  ``SELECT * FROM devices ...``; configuration metric queries are ``SELECT deviceId FROM devices[.modules] WHERE ..``
  (the projection is parsed and kept, the caller decides what to return);
- operands are twin paths (``tags.a.b``, ``properties.reported.x``, ``deviceId``, ``status``,
  ``capabilities.iotEdge``; a segment may be quoted in brackets, ``tags['site-a']``, or escaped in double brackets
  as IoT Hub's metric queries write configuration ids, ``configurations.[[my-deployment]].status``) and literals:
  strings in single or double quotes (a quote is escaped by doubling it or with a backslash), numbers, true, false,
  null;
- comparisons ``= != <> < > <= >=``, ``IN [..]``, ``NIN [..]``; ``AND OR NOT`` (keywords are case-insensitive);
  parentheses; precedence NOT > AND > OR.

Evaluation follows the docs' JSON semantics: comparing values of different types (a string with a number, anything
with a missing path) is *undefined*, never an error; undefined propagates through NOT (NOT undefined is undefined)
and through AND/OR as in three-valued logic, and a device matches only when the whole condition is true. So a device
without ``tags.ring`` matches neither ``tags.ring = 'x'`` nor ``NOT tags.ring = 'x'`` nor ``tags.ring NIN ['x']``.
Property names are matched exactly, and case-insensitively when no key matches exactly (the docs' own examples write
``DeviceID``); string values compare case-sensitively. Ordering (< > <= >=) is defined between two numbers or two
strings only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Condition", "Query", "QuerySyntaxError", "parse", "parse_query"]

# Deeper nesting than this is refused as a syntax error instead of exhausting Python's stack.
MAX_NESTING = 100

_UNDEFINED = object()  # a path the twin does not have


class QuerySyntaxError(ValueError):
    """The text is not a valid target condition / query; the message names the position and what was expected."""


@dataclass(frozen=True)
class _Token:
    kind: str  # "ident", "escaped" ([[name]]), "string", "number", "op", "punct", "star", "end"
    text: str  # as written (for messages)
    value: Any  # decoded value: str for ident/string/op/punct, int|float for number
    position: int  # 0-based offset into the text


_KEYWORDS = {"and", "or", "not", "in", "nin", "true", "false", "null", "select", "from", "where"}
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_OPERATORS = ("<=", ">=", "<>", "!=", "=", "<", ">")
_PUNCTUATION = "()[],."


def _describe(token: _Token) -> str:
    return "end of text" if token.kind == "end" else f"'{token.text}'"


def _error(text: str, position: int, message: str) -> QuerySyntaxError:
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return QuerySyntaxError(f"Syntax error at line {line}, column {column}: {message}")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char.isspace():
            index += 1
            continue
        start = index
        if text.startswith("[[", index):
            end = text.find("]]", index + 2)
            if end < 0 or end == index + 2:
                raise _error(text, start, "expected a name closed by ']]' after '[['")
            index = end + 2
            tokens.append(_Token("escaped", text[start:index], text[start + 2 : end], start))
            continue
        if char in "'\"":
            value, index = _read_string(text, index)
            tokens.append(_Token("string", text[start:index], value, start))
            continue
        if char.isdigit() or (char in "-." and index + 1 < length and text[index + 1].isdigit()):
            match = _NUMBER.match(text, index)
            if match is None:  # unreachable after the test above ("-" or "." is followed by a digit)
                raise _error(text, start, f"invalid number starting '{char}'")
            index = match.end()
            literal = match.group()
            number: int | float = float(literal) if any(c in literal for c in ".eE") else int(literal)
            glued = _IDENT.match(text, index)
            if glued:
                raise _error(text, start, f"invalid number '{literal}{glued.group()}'")
            tokens.append(_Token("number", literal, number, start))
            continue
        match = _IDENT.match(text, index)
        if match:
            index = match.end()
            tokens.append(_Token("ident", match.group(), match.group(), start))
            continue
        operator = next((op for op in _OPERATORS if text.startswith(op, index)), None)
        if operator:
            index += len(operator)
            tokens.append(_Token("op", operator, "!=" if operator == "<>" else operator, start))
            continue
        if char == "*":
            tokens.append(_Token("star", "*", "*", start))
            index += 1
            continue
        if char in _PUNCTUATION:
            tokens.append(_Token("punct", char, char, start))
            index += 1
            continue
        raise _error(text, start, f"unexpected character '{char}'")
    tokens.append(_Token("end", "", None, length))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    chars: list[str] = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            chars.append(text[index + 1])
            index += 2
        elif char == quote:
            if text.startswith(quote, index + 1):  # doubled quote = one quote, as in SQL
                chars.append(quote)
                index += 2
            else:
                return "".join(chars), index + 1
        else:
            chars.append(char)
            index += 1
    raise _error(text, start, f"unterminated string literal starting at {text[start : start + 20]!r}")


# --- evaluation: every node's evaluate(twin) returns True, False or None (undefined) ---


def _lookup(document: Any, segments: tuple[str, ...]) -> Any:
    value = document
    for segment in segments:
        if not isinstance(value, dict):
            return _UNDEFINED
        if segment in value:
            value = value[segment]
            continue
        folded = segment.casefold()
        candidates = [key for key in value if isinstance(key, str) and key.casefold() == folded]
        if not candidates:
            return _UNDEFINED
        value = value[candidates[0]]
    return value


def _kind(value: Any) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None  # objects, arrays, missing: only equal to nothing here


def _compare(left: Any, operator: str, right: Any) -> bool | None:
    kind = _kind(left)
    if kind is None or kind != _kind(right):
        return None
    if operator == "=":
        return left == right
    if operator == "!=":
        return left != right
    if kind not in ("number", "string"):
        return None
    if operator == "<":
        return left < right
    if operator == ">":
        return left > right
    if operator == "<=":
        return left <= right
    return left >= right


@dataclass(frozen=True)
class _Path:
    segments: tuple[str, ...]

    def value(self, twin: dict) -> Any:
        return _lookup(twin, self.segments)


@dataclass(frozen=True)
class _Literal:
    literal: Any

    def value(self, twin: dict) -> Any:
        return self.literal


@dataclass(frozen=True)
class _Comparison:
    left: _Path | _Literal
    operator: str
    right: _Path | _Literal

    def evaluate(self, twin: dict) -> bool | None:
        return _compare(self.left.value(twin), self.operator, self.right.value(twin))


@dataclass(frozen=True)
class _Membership:
    operand: _Path | _Literal
    negated: bool  # NIN
    choices: tuple[Any, ...]

    def evaluate(self, twin: dict) -> bool | None:
        value = self.operand.value(twin)
        if _kind(value) is None:
            return None
        found = any(_compare(value, "=", choice) is True for choice in self.choices)
        return not found if self.negated else found


@dataclass(frozen=True)
class _Not:
    operand: Any

    def evaluate(self, twin: dict) -> bool | None:
        result = self.operand.evaluate(twin)
        return None if result is None else not result


@dataclass(frozen=True)
class _And:
    operands: tuple[Any, ...]

    def evaluate(self, twin: dict) -> bool | None:
        results = [operand.evaluate(twin) for operand in self.operands]
        if False in results:
            return False
        return None if None in results else True


@dataclass(frozen=True)
class _Or:
    operands: tuple[Any, ...]

    def evaluate(self, twin: dict) -> bool | None:
        results = [operand.evaluate(twin) for operand in self.operands]
        if True in results:
            return True
        return None if None in results else False


@dataclass(frozen=True)
class _Everything:
    def evaluate(self, twin: dict) -> bool | None:
        return True


@dataclass(frozen=True)
class Condition:
    """A parsed target condition / WHERE clause."""

    text: str
    _root: Any

    def matches(self, twin: dict) -> bool:
        """True when the condition is true for this twin (false and undefined both mean no)."""
        return self._root.evaluate(twin) is True


@dataclass(frozen=True)
class Query:
    """A parsed ``SELECT ... FROM devices[.modules] [WHERE ...]``; condition None selects every twin."""

    text: str
    condition: Condition | None
    collection: str = "devices"  # or "devices.modules"
    projection: tuple[tuple[str, ...], ...] | None = None  # selected paths; None = SELECT *

    def matches(self, twin: dict) -> bool:
        return self.condition is None or self.condition.matches(twin)


# --- parsing ---


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def fail(self, expected: str, token: _Token | None = None) -> QuerySyntaxError:
        token = token or self.current
        return _error(self.text, token.position, f"expected {expected}, found {_describe(token)}")

    def is_keyword(self, word: str, token: _Token | None = None) -> bool:
        token = token or self.current
        return token.kind == "ident" and token.value.lower() == word

    def expect_keyword(self, word: str) -> None:
        if not self.is_keyword(word):
            raise self.fail(word.upper())
        self.advance()

    def expect_punct(self, char: str, expected: str | None = None) -> None:
        if self.current.kind != "punct" or self.current.value != char:
            raise self.fail(expected or f"'{char}'")
        self.advance()

    def expect_end(self, expected: str) -> None:
        if self.current.kind != "end":
            raise self.fail(expected)

    # condition := or_expr
    def condition(self) -> Any:
        operands = [self.and_expr()]
        while self.is_keyword("or"):
            self.advance()
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else _Or(tuple(operands))

    def and_expr(self) -> Any:
        operands = [self.not_expr()]
        while self.is_keyword("and"):
            self.advance()
            operands.append(self.not_expr())
        return operands[0] if len(operands) == 1 else _And(tuple(operands))

    def not_expr(self) -> Any:
        if self.is_keyword("not"):
            self.advance()
            return _Not(self.nested(self.not_expr))
        return self.primary()

    def nested(self, parse_inner) -> Any:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise _error(self.text, self.current.position, f"conditions nest deeper than {MAX_NESTING} levels")
        try:
            return parse_inner()
        finally:
            self.depth -= 1

    def primary(self) -> Any:
        token = self.current
        if token.kind == "punct" and token.value == "(":
            self.advance()
            inner = self.nested(self.condition)
            self.expect_punct(")", "')' or AND / OR")
            return inner
        left = self.operand("a property path, a literal, NOT or '('")
        if self.is_keyword("in") or self.is_keyword("nin"):
            negated = self.advance().value.lower() == "nin"
            return _Membership(left, negated, self.literal_list())
        if self.current.kind != "op":
            raise self.fail("a comparison operator (= != <> < > <= >= IN NIN)")
        operator = self.advance().value
        right = self.operand("a property path or a literal")
        return _Comparison(left, operator, right)

    def operand(self, expected: str) -> _Path | _Literal:
        token = self.current
        if token.kind in ("string", "number"):
            self.advance()
            return _Literal(token.value)
        if token.kind == "ident":
            word = token.value.lower()
            if word in ("true", "false", "null"):
                self.advance()
                return _Literal({"true": True, "false": False, "null": None}[word])
            if word in _KEYWORDS:
                raise self.fail(expected)
            return self.path()
        raise self.fail(expected)

    def path(self) -> _Path:
        segments = [self.advance().value]
        while self.current.kind == "punct" and self.current.value in ".[":
            if self.advance().value == ".":
                if self.current.kind not in ("ident", "escaped"):
                    raise self.fail("a property name after '.'")
                segments.append(self.advance().value)
            else:
                if self.current.kind != "string":
                    raise self.fail("a quoted property name after '['")
                segments.append(self.advance().value)
                self.expect_punct("]")
        return _Path(tuple(segments))

    def literal_list(self) -> tuple[Any, ...]:
        self.expect_punct("[", "'[' after IN / NIN")
        choices: list[Any] = []
        if self.current.kind == "punct" and self.current.value == "]":
            self.advance()
            return ()
        while True:
            choice = self.operand("a literal in the IN / NIN list")
            if not isinstance(choice, _Literal):
                raise self.fail("a literal (string, number, true, false, null)", self.tokens[self.index - 1])
            choices.append(choice.literal)
            if self.current.kind == "punct" and self.current.value == ",":
                self.advance()
                continue
            self.expect_punct("]", "',' or ']'")
            return tuple(choices)

    def target(self) -> Any:
        if self.current.kind == "end":
            raise self.fail("a condition or '*'")
        if self.current.kind == "star":
            self.advance()
            self.expect_end("end of text after '*'")
            return _Everything()
        root = self.condition()
        self.expect_end("AND, OR or end of text")
        return root

    def query(self) -> Query:
        self.expect_keyword("select")
        projection = self.projection()
        self.expect_keyword("from")
        if not self.is_keyword("devices"):
            raise self.fail("devices or devices.modules (the collections supported)")
        self.advance()
        collection = "devices"
        if self.current.kind == "punct" and self.current.value == ".":
            self.advance()
            if not self.is_keyword("modules"):
                raise self.fail("modules after 'devices.'")
            self.advance()
            collection = "devices.modules"
        condition = None
        if self.current.kind != "end":
            self.expect_keyword("where")
            start = self.current.position
            condition = Condition(self.text[start:].strip(), self.target())
        return Query(self.text.strip(), condition, collection, projection)

    def projection(self) -> tuple[tuple[str, ...], ...] | None:
        if self.current.kind == "star":
            self.advance()
            return None
        paths = []
        while True:
            if self.current.kind != "ident" or self.current.value.lower() in _KEYWORDS:
                raise self.fail("'*' or a property path to select")
            paths.append(self.path().segments)
            if not (self.current.kind == "punct" and self.current.value == ","):
                return tuple(paths)
            self.advance()


def _require_text(text: Any) -> str:
    if not isinstance(text, str):
        raise QuerySyntaxError(f"expected the query as text, got {type(text).__name__}")
    return text


def parse(text: str) -> Condition:
    """Parse a target condition (``*`` for every device); raises QuerySyntaxError naming the position."""
    text = _require_text(text)
    return Condition(text.strip(), _Parser(text).target())


def parse_query(text: str) -> Query:
    """Parse ``SELECT <* | paths> FROM devices[.modules] [WHERE <condition>]``; raises QuerySyntaxError naming the
    position."""
    return _Parser(_require_text(text)).query()
