"""Property tests: the formula evaluator agrees with Python arithmetic; numeric reads back any number."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from rft_cli.graders import build_grader
from rft_cli.graders.answers import DEFAULT_REGEXES, extract_answer, format_number
from rft_cli.graders.formula import Formula, FormulaError

values = st.floats(min_value=-100, max_value=100, allow_nan=False, allow_infinity=False)


@st.composite
def expressions(draw, depth=0):
    """A random formula over a, b, c as (our text, the equivalent Python text)."""
    if depth > 3 or draw(st.booleans()):
        leaf = draw(st.sampled_from(["a", "b", "c", "2", "0.5", "3"]))
        return leaf, leaf
    kind = draw(st.sampled_from(["+", "-", "*", "/", "neg", "max", "abs"]))
    left, py_left = draw(expressions(depth + 1))
    if kind == "neg":
        return f"-({left})", f"-({py_left})"
    if kind == "abs":
        return f"abs({left})", f"abs({py_left})"
    right, py_right = draw(expressions(depth + 1))
    if kind == "max":
        return f"max({left}, {right})", f"max({py_left}, {py_right})"
    return f"({left}) {kind} ({right})", f"({py_left}) {kind} ({py_right})"


@settings(max_examples=300, deadline=None)
@given(expressions(), values, values, values)
def test_formula_matches_python_arithmetic(expression, a, b, c):
    text, python_text = expression
    env = {"a": a, "b": b, "c": c}
    try:
        expected = eval(python_text, {"__builtins__": {"max": max, "abs": abs}}, dict(env))  # noqa: S307  test oracle only
    except ZeroDivisionError:
        expected = None
    formula = Formula(text, env)
    if expected is None or not math.isfinite(expected):
        try:
            formula.evaluate(env)
        except FormulaError:
            return
        raise AssertionError(f"{text} should be a formula error")
    assert math.isclose(formula.evaluate(env), expected, rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.integers(min_value=-(10**9), max_value=10**9).map(float),
        st.decimals(min_value=-(10**6), max_value=10**6, places=3, allow_nan=False).map(float),
    )
)
def test_numeric_reads_back_any_number(value):
    text = format_number(value)
    grader = build_grader({"type": "numeric", "reference": text, "abs_tol": 0, "rel_tol": 1e-12})
    for output in (
        f"Some work: 1 + 2 = 3.\n#### {text}",
        f"So the answer is {text}.",
        f"\\boxed{{{text}}}",
    ):
        assert grader.grade(output, {}).reward == 1.0, output
    assert extract_answer(f"#### {value:,.3f}", DEFAULT_REGEXES) == round(value, 3)
