"""Protocol buffers' text format, the language of Triton's `config.pbtxt`, read without the schema: a message is
fields `name: value` or `name { ... }` (also `name < ... >`, `name: { ... }`), a value a number, a quoted string
(adjacent ones concatenated, C escapes), or a word (an enum value, true, false), and `name: [a, b]` a repeated
field; `#` comments, optional `,` or `;` after a field. Every field is returned as a list of its values, in order,
so the caller decides which fields are repeated and what they mean (triton_import.py checks them against Triton's
ModelConfig). A small parser of this subset rather than protobuf's own `text_format` with Triton's compiled
model_config.proto: the import then needs no generated code and no gRPC toolchain; the tests hold it to
`text_format`'s reading of the same files."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Union

from modelfn.errors import PublishError


class Word(str):
    """An unquoted identifier: an enum value (TYPE_FP32, KIND_CPU) or a boolean, kept apart from strings."""

    __slots__ = ()


Value = Union[int, float, str, Word, "Message"]
Message = dict[str, list[Value]]


_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?|inf(?:inity)?|nan)(?![\w.]))
  | (?P<word>[A-Za-z_][\w.]*)
  | (?P<punct>[{}\[\]<>:,;])
    """,
    re.VERBOSE,
)
_CLOSE = {"{": "}", "<": ">"}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    line: int


def tokens(text: str, where: str) -> list[Token]:
    out: list[Token] = []
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise PublishError(f"{where}:{line}: cannot read {text[pos : pos + 20]!r}")
        kind = m.lastgroup or ""
        if kind != "space":
            out.append(Token(kind, m.group(), line))
        line += m.group().count("\n")
        pos = m.end()
    return out


class Parser:
    def __init__(self, text: str, where: str) -> None:
        self.where = where
        self.toks = tokens(text, where)
        self.i = 0

    def fail(self, message: str) -> PublishError:
        line = self.toks[min(self.i, len(self.toks) - 1)].line if self.toks else 1
        return PublishError(f"{self.where}:{line}: {message}")

    def peek(self) -> Token | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, text: str | None = None) -> Token:
        tok = self.peek()
        if tok is None:
            raise self.fail(f"expected {text or 'more'}, the file ends")
        if text is not None and tok.text != text:
            raise self.fail(f"expected {text!r}, got {tok.text!r}")
        self.i += 1
        return tok

    def accept(self, text: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.kind == "punct" and tok.text == text:
            self.i += 1
            return True
        return False

    def message(self, close: str | None) -> Message:
        fields: Message = {}
        while True:
            tok = self.peek()
            if tok is None:
                if close is not None:
                    raise self.fail(f"expected {close!r}, the file ends")
                return fields
            if close is not None and tok.text == close:
                self.i += 1
                return fields
            if tok.kind != "word":
                raise self.fail(f"expected a field name, got {tok.text!r}")
            self.i += 1
            fields.setdefault(tok.text, []).extend(self.field_values(tok.text))
            if not self.accept(","):
                self.accept(";")

    def field_values(self, name: str) -> list[Value]:
        colon = self.accept(":")
        if self.accept("["):
            values: list[Value] = []
            while not self.accept("]"):
                values.append(self.value(name, colon))
                if not self.accept(","):
                    self.take("]")
                    break
            return values
        return [self.value(name, colon)]

    def value(self, name: str, colon: bool) -> Value:
        tok = self.peek()
        if tok is not None and tok.text in _CLOSE:
            self.i += 1
            return self.message(_CLOSE[tok.text])
        if not colon:
            raise self.fail(f"field {name!r}: expected ':' before a value or '{{' before a message")
        tok = self.take()
        if tok.kind == "string":
            text = _unquote(tok.text)
            while (nxt := self.peek()) is not None and nxt.kind == "string":  # "a" "b" is "ab"
                text += _unquote(self.take().text)
            return text
        if tok.kind == "number":
            return _number(tok.text)
        if tok.kind == "word":
            return Word(tok.text)
        raise self.fail(f"field {name!r}: expected a value, got {tok.text!r}")


def _unquote(text: str) -> str:
    return str(ast.literal_eval(text))


def _number(text: str) -> int | float:
    low = text.lower()
    if low.lstrip("+-").startswith("0x"):
        return int(text, 16)
    if low.endswith("f") and not low.endswith("inf"):  # 2.5f
        text = text[:-1]
    try:
        return int(text, 10)
    except ValueError:
        return float(text)


def parse(text: str, where: str) -> Message:
    """The top-level message of a text-format file; PublishError naming the file and line when it is not one."""
    return Parser(text, where).message(None)
