"""Grader core: templates, string_check, numeric, regex, json_match, multi, building, the TRL adapter."""

from __future__ import annotations

import json
import pickle

import pytest

from rft_cli.errors import GraderError
from rft_cli.graders import GradeResult, build_grader, load_grader, reward_function
from rft_cli.graders.answers import format_number, parse_number

OUT = "{{ sample.output_text }}"


def check(op: str, reference: str = "{{ item.answer }}", input: str = OUT) -> dict:
    return {"type": "string_check", "input": input, "reference": reference, "operation": op}


# --- templating -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template,item,expected",
    [
        ("{{ item.answer }}", {"answer": "4"}, "4"),
        ("{{item.answer}}", {"answer": "4"}, "4"),
        ("{{ item.ground_truth.date }}", {"ground_truth": {"date": "2024-01-01"}}, "2024-01-01"),
        ("{{ item.messages[0].content }}", {"messages": [{"role": "user", "content": "hi"}]}, "hi"),
        ("{{ item.values[-1] }}", {"values": [1, 2, 3]}, "3"),
        ("{{ item['odd key'] }}", {"odd key": "v"}, "v"),
        ("a={{ item.a }}, b={{ item.b }}", {"a": 1, "b": [1, 2]}, "a=1, b=[1, 2]"),
        ("{{ item.obj }}", {"obj": {"k": True}}, '{"k": true}'),
        ("no variables", {}, "no variables"),
    ],
)
def test_templates_render_item_paths(template, item, expected):
    grader = build_grader(check("eq", reference=template, input=expected))
    assert grader.grade("unused", item).reward == 1.0


def test_sample_output_json_path():
    grader = build_grader(check("eq", reference="yes", input="{{ sample.output_json.compliant }}"))
    assert grader.grade('{"compliant": "yes"}', {}).reward == 1.0
    assert grader.grade('{"compliant": "no"}', {}).reward == 0.0


def test_unparsable_output_json_is_a_sample_parse_error():
    grader = build_grader(check("eq", reference="yes", input="{{ sample.output_json.compliant }}"))
    result = grader.grade("not json", {})
    assert result.reward == 0.0 and result.errors == {"sample_parse_error": 1}


@pytest.mark.parametrize("item", [{}, {"answer": {"x": 1}}, {"answer": []}])
def test_unresolved_variable_is_an_invalid_variable_error(item):
    grader = build_grader(check("eq", reference="{{ item.answer.value[0] }}"))
    result = grader.grade("x", item)
    assert result.reward == 0.0 and result.errors == {"invalid_variable_error": 1}


def test_item_fields_lists_top_level_fields():
    grader = build_grader(
        check("eq", reference="{{ item.gt.date }} {{ item.messages[0].content }}")
    )
    assert grader.item_fields() == {"gt", "messages"}


@pytest.mark.parametrize("bad", ["{{ foo.x }}", "{{ item.a..b }}", "{{ item.a[x] }}"])
def test_bad_template_syntax_is_a_grader_error(bad):
    with pytest.raises(GraderError, match=r"^input: "):
        build_grader(check("eq", input=bad))


# --- string_check -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op,output,reference,expected",
    [
        ("eq", "Paris", "Paris", 1.0),
        ("eq", "paris", "Paris", 0.0),
        ("ne", "London", "Paris", 1.0),
        ("ne", "Paris", "Paris", 0.0),
        ("like", "It is Paris.", "Paris", 1.0),
        ("like", "It is paris.", "Paris", 0.0),
        ("ilike", "It is PARIS.", "paris", 1.0),
        ("ilike", "It is Rome.", "paris", 0.0),
    ],
)
def test_string_check_operations(op, output, reference, expected):
    grader = build_grader(check(op))
    assert grader.grade(output, {"answer": reference}).reward == expected


# --- numeric ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("1,234", 1234.0),
        ("$5", 5.0),
        ("50%", 50.0),
        ("3/4", 0.75),
        ("14.0", 14.0),
        ("-7", -7.0),
        ("\u22127", -7.0),
        ("\\frac{3}{4}", 0.75),
        ("\\$12.50", 12.5),
        ("1e3", 1000.0),
        ("about 12 apples", 12.0),
        ("none", None),
    ],
)
def test_parse_number_normalises(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    "output",
    [
        "3 + 4 = 7\n#### 7",
        "The answer is 7.",
        "Therefore, the answer is <7>.",
        "so we get \\boxed{7}",
        "x = 3 + 4 = 7",
        "#### 7.00",
        "I think the answer is 7, definitely",
    ],
)
def test_numeric_extracts_the_final_answer(output):
    grader = build_grader({"type": "numeric", "reference": "{{ item.answer_value }}"})
    result = grader.grade(output, {"answer_value": "7"})
    assert result.reward == 1.0
    assert result.answer == "7"


def test_numeric_prefers_marked_answer_over_last_number():
    grader = build_grader({"type": "numeric", "reference": "{{ item.a }}"})
    assert grader.grade("#### 5\nchecking: 2 + 3 = 5, not 6", {"a": "5"}).reward == 1.0


def test_numeric_partial_credit_and_nothing_extractable():
    grader = build_grader({"type": "numeric", "reference": "{{ item.a }}", "partial_credit": 0.1})
    wrong = grader.grade("#### 8", {"a": "7"})
    assert wrong.reward == 0.1 and wrong.answer == "8"
    nothing = grader.grade("I do not know", {"a": "7"})
    assert nothing.reward == 0.0 and nothing.answer is None and nothing.errors == {}


def test_numeric_tolerances():
    loose = build_grader({"type": "numeric", "reference": "1000", "abs_tol": 0, "rel_tol": 0.01})
    assert loose.grade("#### 1005", {}).reward == 1.0
    strict = build_grader({"type": "numeric", "reference": "0.333", "abs_tol": 0})
    assert strict.grade("#### 0.334", {}).reward == 0.0
    default = build_grader({"type": "numeric", "reference": "0.333"})
    assert default.grade("#### 0.335", {}).reward == 1.0  # ReFT's |diff| <= 1e-2


def test_numeric_custom_patterns():
    grader = build_grader(
        {"type": "numeric", "reference": "9", "patterns": [r"RESULT=(\S+)"], "last_number": False}
    )
    assert grader.grade("RESULT=9 then 10", {}).reward == 1.0
    assert grader.grade("the answer is 9", {}).reward == 0.0


def test_numeric_unparsable_reference_is_counted():
    grader = build_grader({"type": "numeric", "reference": "{{ item.a }}"})
    result = grader.grade("#### 3", {"a": "three"})
    assert result.reward == 0.0 and result.errors == {"reference_parse_error": 1}


def test_format_number_is_canonical():
    assert (
        format_number(14.0) == "14"
        and format_number(0.1 + 0.2) == "0.3"
        and format_number(-2.5) == "-2.5"
    )


# --- regex and json_match ---------------------------------------------------------------------


def test_regex_match_and_extract():
    match = build_grader({"type": "regex", "pattern": r"^\d+$"})
    assert match.grade("123", {}).reward == 1.0 and match.grade("12a", {}).reward == 0.0
    extract = build_grader(
        {
            "type": "regex",
            "pattern": r"Label: (\w+)",
            "reference": "{{ item.label }}",
            "occurrence": "last",
        }
    )
    assert extract.grade("Label: no ... Label: yes", {"label": "yes"}).reward == 1.0
    named = build_grader(
        {
            "type": "regex",
            "pattern": r"(x)=(?P<answer>\w+)",
            "reference": "B",
            "case_sensitive": False,
        }
    )
    assert named.grade("x=b", {}).reward == 1.0
    flags = build_grader({"type": "regex", "pattern": "^yes", "flags": ["ignorecase", "multiline"]})
    assert flags.grade("well\nYES", {}).reward == 1.0


def test_json_match_weights():
    grader = build_grader(
        {
            "type": "json_match",
            "reference": "{{ item.ref }}",
            "fields": {"name": 3, "age": 1, "addr.city": 1},
        }
    )
    item = {"ref": {"name": "Ann", "age": 30, "addr": {"city": "Oslo"}}}
    assert grader.grade('{"name": "Ann", "age": 30, "addr": {"city": "Oslo"}}', item).reward == 1.0
    assert grader.grade('{"name": "Ann", "age": 31, "addr": {"city": "Oslo"}}', item).reward == 0.8
    assert grader.grade('{"name": "Bob", "age": 30}', item).reward == pytest.approx(0.2)
    assert grader.grade("oops", item).errors == {"sample_parse_error": 1}


def test_json_match_inline_reference_and_case():
    grader = build_grader(
        {"type": "json_match", "reference": {"a": "X", "b": 1.0}, "case_sensitive": False}
    )
    assert grader.grade('{"a": " x ", "b": 1}', {}).reward == 1.0


# --- multi ------------------------------------------------------------------------------------


def _multi(formula: str) -> dict:
    return {
        "type": "multi",
        "graders": {
            "exact": check("eq"),
            "num": {"type": "numeric", "reference": "{{ item.answer }}"},
        },
        "calculate_output": formula,
    }


@pytest.mark.parametrize(
    "formula,expected",
    [
        ("0.5 * exact + 0.5 * num", 0.5),
        ("max(exact, num)", 1.0),
        ("min(exact, num, 1)", 0.0),
        ("(num + 1) / 2 ^ 1", 1.0),
        ("2 ^ 3 ^ 0 - 1", 1.0),
        ("-num + 2", 1.0),
        ("abs(exact - num)", 1.0),
        ("floor(0.7) + ceil(0.2) * sqrt(num)", 1.0),
        ("log(exp(num))", 1.0),
    ],
)
def test_multi_formulas(formula, expected):
    result = build_grader(_multi(formula)).grade("#### 4", {"answer": "4"})
    assert result.reward == pytest.approx(expected)
    assert result.sub_rewards == {"exact": 0.0, "num": 1.0}


@pytest.mark.parametrize(
    "formula", ["num / exact", "log(exact)", "sqrt(-1 - num)", "exp(1000 * num)"]
)
def test_multi_math_fault_is_a_formula_error(formula):
    result = build_grader(_multi(formula)).grade("#### 4", {"answer": "4"})
    assert result.reward == 0.0 and result.errors == {"formula_error": 1}


def test_multi_adds_sub_grader_errors_and_batches():
    grader = build_grader(_multi("exact + num"))
    results = grader.grade_batch(["#### 4", "4"], [{"answer": "4"}, {}])
    assert results[0].reward == 1.0 and results[0].answer == "4"
    assert results[1].errors == {"invalid_variable_error": 2}


# --- grader-file errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"type": "nope"}, 'type: "nope" is not one of string_check'),
        ({"input": "x"}, "type: missing"),
        (check("equal"), 'operation: "equal" is not one of eq, ne, like, ilike'),
        (
            {**check("eq"), "extra": 1},
            "extra: unknown field (allowed: name, type, input, reference, operation)",
        ),
        ({"type": "string_check", "input": "x", "operation": "eq"}, "reference: missing"),
        (
            {"type": "multi", "graders": {"acc": check("equal")}, "calculate_output": "acc"},
            'graders.acc.operation: "equal" is not one of',
        ),
        (
            {"type": "multi", "graders": [check("eq")], "calculate_output": "a"},
            "graders: is a list; write a named map",
        ),
        (
            {
                "type": "multi",
                "graders": {"a": {"type": "multi", "graders": {}, "calculate_output": "1"}},
                "calculate_output": "a",
            },
            "graders.a.type: a multi grader cannot contain another multi",
        ),
        (_multi("exact * * num"), 'calculate_output: unexpected "*" at position 8'),
        (_multi("exact + other"), 'calculate_output: unknown name "other"'),
        (_multi("pow(exact)"), 'calculate_output: unknown function "pow"'),
        (_multi("(exact"), "calculate_output: unexpected end of formula"),
        (_multi("exact $ num"), 'calculate_output: unexpected character "$"'),
        (_multi("abs(exact, num)"), "calculate_output: abs() takes 1 argument"),
        (
            {"type": "numeric", "reference": "1", "partial_credit": 2},
            "partial_credit: Input should be less than or equal to 1",
        ),
        (
            {"type": "numeric", "reference": "1", "patterns": ["(a)(b)"]},
            "patterns[0]: '(a)(b)' has 2 groups",
        ),
        ({"type": "regex", "pattern": "("}, "pattern: invalid regular expression"),
        (
            {"type": "json_match", "reference": {}, "fields": {"a": 0}},
            "fields: the weights sum to 0",
        ),
        ([1, 2], "grader: is a list"),
    ],
)
def test_grader_errors_name_the_field(spec, message):
    with pytest.raises(GraderError) as info:
        build_grader(spec, source="grader.yaml")
    assert str(info.value).startswith("grader.yaml: ")
    assert message in str(info.value)
    assert info.value.exit_code == 2


def test_load_grader_yaml_and_json(tmp_path):
    yaml_file = tmp_path / "grader.yaml"
    yaml_file.write_text(
        "type: string_check\nname: exact\ninput: '{{ sample.output_text }}'\nreference: '{{ item.answer }}'\noperation: eq\n"
    )
    json_file = tmp_path / "grader.json"
    json_file.write_text(json.dumps(check("ilike")))
    assert load_grader(yaml_file).name == "exact"
    assert load_grader(yaml_file).grade("4", {"answer": "4"}).reward == 1.0
    assert load_grader(json_file).grade("A B", {"answer": "b"}).reward == 1.0


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("bad.yaml", "type: [unclosed\n", "bad.yaml line 2: not valid YAML"),
        ("bad.json", "{nope}", "bad.json: not valid JSON"),
        ("list.yaml", "- type: string_check\n", "holds no grader object"),
        (
            "op.yaml",
            "type: multi\ngraders:\n  acc: {type: string_check, input: x, reference: y, operation: equal}\ncalculate_output: acc\n",
            'op.yaml: graders.acc.operation: "equal" is not one of eq, ne, like, ilike',
        ),
    ],
)
def test_load_grader_file_errors(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(GraderError) as info:
        load_grader(path)
    assert message in str(info.value)


def test_missing_grader_file(tmp_path):
    with pytest.raises(GraderError, match="cannot read the grader file"):
        load_grader(tmp_path / "absent.yaml")


# --- pickling and the TRL adapter -------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        check("eq"),
        _multi("exact + num"),
        {"type": "regex", "pattern": "a(b)", "reference": "b"},
        {"type": "json_match", "reference": {"a": 1}},
        {"type": "numeric", "reference": "{{ item.answer }}", "patterns": ["=(\\d+)"]},
    ],
)
def test_graders_pickle(spec):
    grader = build_grader(spec)
    clone = pickle.loads(pickle.dumps(grader))
    sample, item = "#### 4 ab =4", {"answer": "4"}
    assert clone.grade(sample, item) == grader.grade(sample, item)


def test_reward_function_with_plain_and_conversational_completions():
    fn = reward_function(
        build_grader({"type": "numeric", "reference": "{{ item.answer_value }}", "name": "acc"})
    )
    assert fn.__name__ == "acc"
    logged = []
    rewards = fn(
        prompts=[[{"role": "user", "content": "q1"}], [{"role": "user", "content": "q2"}]],
        completions=[
            [{"role": "assistant", "content": "#### 3"}],
            [{"role": "assistant", "content": [{"type": "text", "text": "#### 5"}]}],
        ],
        answer_value=["3", "4"],
        trainer_state=object(),
        log_metric=lambda name, value: logged.append((name, value)),
        completion_ids=[[1], [2]],
    )
    assert rewards == [1.0, 0.0]
    assert logged == [("acc/errors", 0.0)]
    assert pickle.loads(pickle.dumps(fn))(
        prompts=["q"], completions=["#### 3"], answer_value=["3"]
    ) == [1.0]


def test_reward_function_rebuilds_items_and_counts_errors():
    grader = build_grader(check("eq", reference="{{ item.messages[0].content }}"))
    fn = reward_function(grader)
    assert fn(prompts=[[{"role": "user", "content": "hi"}]], completions=["hi"]) == [1.0]
    assert fn(prompts=["plain"], completions=["hi"]) == [0.0]
    assert fn.error_counts == {"invalid_variable_error": 1}
    assert isinstance(fn.last_results[0], GradeResult)


@pytest.mark.parametrize(
    "module",
    [
        "rft_cli.graders.answers",
        "rft_cli.graders.formula",
        "rft_cli.graders.builtin",
        "rft_cli.graders.multi",
        "rft_cli.graders.build",
        "rft_cli.graders.reward",
    ],
)
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0


def test_unknown_type_suggests_the_closest():
    with pytest.raises(
        GraderError, match='"string_chek" is not one of .* \\(did you mean "string_check"\\?\\)'
    ):
        build_grader({"type": "string_chek"})
