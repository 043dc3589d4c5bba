"""A small safe evaluator for `multi`'s `calculate_output` (no `eval`).

Grammar: numbers, variable names, `+ - * / ^` (power, right-associative), unary minus, parentheses,
and the functions min, max, abs, floor, ceil, exp, sqrt, log. The parse tree is plain tuples, so a
compiled formula pickles.

>>> Formula("0.5 * a + 0.5 * max(b, c)", {"a", "b", "c"}).evaluate({"a": 1.0, "b": 0.0, "c": 1.0})
1.0
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from rft_cli.errors import GraderError


def _min(*values: float) -> float:
    """min() of one or more numbers (Python's min(x) of one number is a TypeError)."""
    return min(values)


def _max(*values: float) -> float:
    return max(values)


FUNCTIONS: dict[str, tuple[Any, int]] = {  # name -> (function, arity; 0 means one or more)
    "min": (_min, 0),
    "max": (_max, 0),
    "abs": (abs, 1),
    "floor": (math.floor, 1),
    "ceil": (math.ceil, 1),
    "exp": (math.exp, 1),
    "sqrt": (math.sqrt, 1),
    "log": (math.log, 1),
}
_TOKEN = re.compile(
    r"\s*(?:(\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)|([A-Za-z_]\w*)|(\*\*|[-+*/^(),]))"
)


class FormulaError(ArithmeticError):
    """Division by zero, a domain error, overflow or a non-finite result while evaluating."""


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ValueError(f'unexpected character "{text[pos:].lstrip()[0]}" at position {pos}')
        number, name, op = match.groups()
        kind, value = (
            ("num", number)
            if number
            else (("name", name) if name else ("op", "^" if op == "**" else op))
        )
        tokens.append((kind, value, match.start(match.lastindex or 0)))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, variables: set[str]) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.variables = variables

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise ValueError(
                f"unexpected end of formula{f' (expected {value!r})' if value else ''}"
            )
        if value is not None and token[1] != value:
            raise ValueError(f'expected "{value}" at position {token[2]}, found "{token[1]}"')
        self.pos += 1
        return token

    def parse(self) -> tuple:
        tree = self.expr()
        token = self.peek()
        if token is not None:
            raise ValueError(f'unexpected "{token[1]}" at position {token[2]}')
        return tree

    def expr(self) -> tuple:
        tree = self.term()
        while (token := self.peek()) is not None and token[1] in "+-" and token[0] == "op":
            self.pos += 1
            tree = ("bin", token[1], tree, self.term())
        return tree

    def term(self) -> tuple:
        tree = self.unary()
        while (token := self.peek()) is not None and token[1] in "*/" and token[0] == "op":
            self.pos += 1
            tree = ("bin", token[1], tree, self.unary())
        return tree

    def unary(self) -> tuple:
        token = self.peek()
        if token is not None and token[0] == "op" and token[1] in "+-":
            self.pos += 1
            operand = self.unary()
            return ("neg", operand) if token[1] == "-" else operand
        return self.power()

    def power(self) -> tuple:
        base = self.atom()
        token = self.peek()
        if token is not None and token[1] == "^":
            self.pos += 1
            return ("bin", "^", base, self.unary())
        return base

    def atom(self) -> tuple:
        kind, value, where = self.take()
        if kind == "num":
            return ("num", float(value))
        if kind == "op" and value == "(":
            tree = self.expr()
            self.take(")")
            return tree
        if kind == "name":
            return self.name(value, where)
        raise ValueError(f'unexpected "{value}" at position {where}')

    def name(self, value: str, where: int) -> tuple:
        token = self.peek()
        if token is not None and token[1] == "(":
            if value not in FUNCTIONS:
                raise ValueError(
                    f'unknown function "{value}" at position {where} (use {", ".join(FUNCTIONS)})'
                )
            self.pos += 1
            args = [self.expr()]
            while self.peek() is not None and self.peek()[1] == ",":  # type: ignore[index]
                self.pos += 1
                args.append(self.expr())
            self.take(")")
            arity = FUNCTIONS[value][1]
            if arity and len(args) != arity:
                raise ValueError(f"{value}() takes {arity} argument, got {len(args)}")
            return ("call", value, tuple(args))
        if value not in self.variables:
            known = ", ".join(sorted(self.variables)) or "none"
            raise ValueError(
                f'unknown name "{value}" at position {where} (the graders are: {known})'
            )
        return ("var", value)


def _evaluate(tree: tuple, values: Mapping[str, float]) -> float:
    kind = tree[0]
    if kind == "num":
        return tree[1]
    if kind == "var":
        return values[tree[1]]
    if kind == "neg":
        return -_evaluate(tree[1], values)
    if kind == "call":
        function = FUNCTIONS[tree[1]][0]
        return float(function(*(_evaluate(arg, values) for arg in tree[2])))
    left, right = _evaluate(tree[2], values), _evaluate(tree[3], values)
    op = tree[1]
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "/":
        return left / right
    return math.pow(left, right)


class Formula:
    """A parsed `calculate_output`; `evaluate` raises FormulaError on a math fault."""

    def __init__(
        self, text: str, variables: Iterable[str], where: str = "calculate_output"
    ) -> None:
        self.text = text
        try:
            self.tree = _Parser(text, set(variables)).parse()
        except ValueError as exc:
            raise GraderError(f'{where}: {exc} in "{text}"') from None
        except RecursionError:
            raise GraderError(
                f"{where}: the formula is nested too deeply (hundreds of parentheses); simplify it"
            ) from None

    def evaluate(self, values: Mapping[str, float]) -> float:
        try:
            result = _evaluate(self.tree, values)
        except (ZeroDivisionError, ValueError, OverflowError, TypeError, RecursionError) as exc:
            raise FormulaError(f"{type(exc).__name__}: {exc}") from None
        if not math.isfinite(result):
            raise FormulaError(f"the result is {result}")
        return result
