"""The small SOQL subset the sandbox Salesforce answers: what the connectors and the tests send.

``SELECT f, ... | COUNT() FROM Obj [WHERE cond] [ORDER BY f [ASC|DESC], ...] [LIMIT n]`` where a
condition combines ``field op literal`` and ``field [NOT] IN (literals)`` with AND, OR, NOT and
parentheses. Datetimes compare as the fixed-width UTC strings the sandbox stores, so no parsing
happens per record.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class Record(Protocol):
    """What a predicate reads: a record's value of a field (a dict or a row view)."""

    def get(self, key: str, /) -> Any: ...


Predicate = Callable[[Record], bool]


@dataclass(frozen=True)
class Cond:
    """A compiled condition and what it implies: lower bounds per field and a set of candidate ids.

    The server uses the implications to look at a few rows instead of all of them; ``test`` is still
    applied to every candidate.
    """

    test: Predicate
    lower: Mapping[str, Any] = field(default_factory=dict)
    ids: frozenset[str] | None = None


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
    | (?P<date>\d{4}-\d{2}-\d{2})
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<op><=|>=|!=|<>|=|<|>)
    | (?P<punct>[(),])
    | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<>": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class SoqlError(Exception):
    """A query the sandbox refuses, with the Salesforce error code it answers with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Query:
    """A parsed query: canonical field names, the object, a predicate, the order and the limit."""

    obj: str
    fields: tuple[str, ...]
    count: bool
    where: Cond | None
    order: tuple[tuple[str, bool], ...]  # (field, descending)
    limit: int | None


def format_datetime(value: dt.datetime) -> str:
    """The form the sandbox stores and the REST API returns: ``2026-08-19T02:18:04.000+0000``."""
    value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


class _Parser:
    def __init__(self, text: str, schema: Mapping[str, Sequence[str]]) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise SoqlError("MALFORMED_QUERY", f"unexpected token at: {text[pos : pos + 20]!r}")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind)))
            pos = match.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        self.pos = 0
        self.schema = {
            name.lower(): (name, {f.lower(): f for f in fields}) for name, fields in schema.items()
        }
        self.fieldmap: dict[str, str] = {}
        self.obj = ""

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def keyword(self, *words: str) -> bool:
        token = self.peek()
        if token is not None and token[0] == "word" and token[1].upper() in words:
            self.pos += 1
            return True
        return False

    def expect(self, kind: str, value: str | None = None) -> str:
        token = self.peek()
        if token is None or token[0] != kind or (value is not None and token[1].upper() != value):
            got = "end of query" if token is None else repr(token[1])
            raise SoqlError("MALFORMED_QUERY", f"expected {value or kind}, got {got}")
        self.pos += 1
        return token[1]

    def field(self, name: str) -> str:
        found = self.fieldmap.get(name.lower())
        if found is None:
            raise SoqlError("INVALID_FIELD", f"No such column '{name}' on entity '{self.obj}'.")
        return found

    def parse(self) -> Query:
        self.expect("word", "SELECT")
        raw_fields: list[str] = []
        count = False
        if self.keyword("COUNT"):
            self.expect("punct", "(")
            self.expect("punct", ")")
            count = True
        else:
            raw_fields.append(self.expect("word"))
            while self.peek() == ("punct", ","):
                self.pos += 1
                raw_fields.append(self.expect("word"))
        self.expect("word", "FROM")
        obj = self.expect("word")
        entry = self.schema.get(obj.lower())
        if entry is None:
            raise SoqlError("INVALID_TYPE", f"sObject type '{obj}' is not supported.")
        self.obj, self.fieldmap = entry
        fields = tuple(self.field(f) for f in raw_fields)
        where = self.condition() if self.keyword("WHERE") else None
        order: list[tuple[str, bool]] = []
        if self.keyword("ORDER"):
            self.expect("word", "BY")
            while True:
                name = self.field(self.expect("word"))
                desc = self.keyword("DESC")
                if not desc:
                    self.keyword("ASC")
                order.append((name, desc))
                if self.peek() != ("punct", ","):
                    break
                self.pos += 1
        limit = int(self.expect("number")) if self.keyword("LIMIT") else None
        if self.peek() is not None:
            raise SoqlError("MALFORMED_QUERY", f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return Query(self.obj, fields, count, where, tuple(order), limit)

    def condition(self) -> Cond:
        terms = [self.conjunction()]
        while self.keyword("OR"):
            terms.append(self.conjunction())
        if len(terms) == 1:
            return terms[0]
        tests = [t.test for t in terms]
        lower = {
            k: min(t.lower[k] for t in terms) for k in terms[0].lower if all(k in t.lower for t in terms)
        }
        id_sets = [t.ids for t in terms]
        ids = None if any(i is None for i in id_sets) else frozenset().union(*id_sets)  # type: ignore[arg-type]
        return Cond(lambda r: any(t(r) for t in tests), lower, ids)

    def conjunction(self) -> Cond:
        factors = [self.factor()]
        while self.keyword("AND"):
            factors.append(self.factor())
        if len(factors) == 1:
            return factors[0]
        tests = [f.test for f in factors]
        lower: dict[str, Any] = {}
        ids: frozenset[str] | None = None
        for f in factors:
            for k, v in f.lower.items():
                lower[k] = max(lower[k], v) if k in lower else v
            if f.ids is not None:
                ids = f.ids if ids is None else ids & f.ids
        return Cond(lambda r: all(t(r) for t in tests), lower, ids)

    def factor(self) -> Cond:
        if self.keyword("NOT"):
            inner = self.factor().test
            return Cond(lambda r: not inner(r))
        if self.peek() == ("punct", "("):
            self.pos += 1
            cond = self.condition()
            self.expect("punct", ")")
            return cond
        name = self.field(self.expect("word"))
        negate = self.keyword("NOT")
        if self.keyword("IN"):
            self.expect("punct", "(")
            values = {self.literal()}
            while self.peek() == ("punct", ","):
                self.pos += 1
                values.add(self.literal())
            self.expect("punct", ")")
            if negate:
                return Cond(lambda r: r.get(name) not in values)
            ids = frozenset(str(v) for v in values) if name == "Id" else None
            return Cond(lambda r: r.get(name) in values, {}, ids)
        if negate:
            raise SoqlError("MALFORMED_QUERY", "NOT must precede IN here")
        symbol = self.expect("op")
        op = _OPS[symbol]
        value = self.literal()
        if value is None or op in (operator.eq, operator.ne):
            exact = op is operator.eq and value is not None
            return Cond(
                lambda r: bool(op(r.get(name), value)),
                {name: value} if exact else {},
                frozenset([str(value)]) if exact and name == "Id" else None,
            )

        def compare(r: Record) -> bool:
            have = r.get(name)
            return have is not None and bool(op(have, value))

        return Cond(compare, {name: value} if symbol in (">", ">=") else {})

    def literal(self) -> Any:
        token = self.peek()
        if token is None:
            raise SoqlError("MALFORMED_QUERY", "expected a value, got end of query")
        self.pos += 1
        kind, text = token
        if kind == "string":
            return re.sub(r"\\(.)", r"\1", text[1:-1])
        if kind == "number":
            return float(text)
        if kind == "date":
            return text
        if kind == "datetime":
            try:
                moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise SoqlError("MALFORMED_QUERY", f"invalid datetime {text}") from None
            return format_datetime(moment)
        if kind == "word" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if kind == "word" and text.lower() == "null":
            return None
        raise SoqlError("MALFORMED_QUERY", f"unexpected {text!r} where a value was expected")


def parse(text: str, schema: Mapping[str, Sequence[str]]) -> Query:
    """Parse ``text`` against ``schema`` (object -> field names); raises :class:`SoqlError`."""
    return _Parser(text, schema).parse()
