"""`rft validate` through Typer's CliRunner: every check, every exit code, the exact messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import rft_cli.graders
from rft_cli.cli import app
from rft_cli.errors import GraderError

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example"
GOOD = '{"messages": [{"role": "user", "content": "What is 2 + 2?"}], "answer": "4"}'


def _rft(*args: str):
    return runner.invoke(app, ["validate", *map(str, args)])


def _file(tmp_path: Path, text: str | bytes, name: str = "train.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_example_data_passes():
    result = _rft(
        EXAMPLE / "train.jsonl",
        "--valid",
        EXAMPLE / "valid.jsonl",
        "--overlap-fields",
        "reference_answer",
    )
    assert result.exit_code == 0, result.output
    assert "OK: the data is valid (0 warning(s))." in result.stdout
    assert "0 exact, 0 near-duplicate" in result.stdout


@pytest.mark.parametrize(
    "content,expected",
    [
        (
            b"\xff\xfe{}\n",
            "line 1 column 1: byte 1 is not valid UTF-8 (invalid start byte); save the file as UTF-8",
        ),
        (
            GOOD.encode()[:20] + b"\xe9" + GOOD.encode()[20:] + b"\n",
            "line 1 column 21: byte 21 is not valid UTF-8",
        ),
        (
            '{"messages": [}\n',
            "line 1 column 15: invalid JSON (Expecting value); write one complete strict-JSON object per line",
        ),
        (GOOD + "\n" + GOOD[:-1] + ",}\n", "line 2 column 77: invalid JSON ("),
        (
            '{"messages": [{"role": "user", "content": "q"}], "x": NaN}\n',
            "line 1: invalid JSON (NaN is not valid JSON",
        ),
        (
            '{"messages": [{"role": "user", "content": "q"}], "x": -Infinity}\n',
            "line 1: invalid JSON (-Infinity is not valid JSON",
        ),
        (
            "[1, 2]\n",
            "line 1: the row is a JSON list, not an object (write one JSON object per line)",
        ),
        ("null\n", "line 1: the row is a JSON null, not an object"),
        (
            '{"answer": "4"}\n',
            'line 1: missing field "messages" (each row needs a "messages" list ending in a user turn)',
        ),
        (
            '{"messages": []}\n',
            'line 1: "messages" must be a non-empty list of {"role", "content"} objects',
        ),
        (
            '{"messages": ["hi"]}\n',
            'line 1: messages[0] must be an object with "role" and "content"',
        ),
        (
            '{"messages": [{"role": "robot", "content": "hi"}]}\n',
            'line 1: messages[0].role is "robot"; use one of system, developer, user, assistant',
        ),
        (
            '{"messages": [{"role": "user"}]}\n',
            'line 1: messages[0] has no "content" (give the message text as a string)',
        ),
        (
            '{"messages": [{"role": "user", "content": 3}]}\n',
            'line 1: messages[0].content must be a string or a list of {"type": "text", "text": ...} parts',
        ),
        (
            '{"messages": [{"role": "user", "content": " "}]}\n',
            "line 1: messages[0].content is empty (write the message text)",
        ),
        (
            '{"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}]}\n',
            'line 1: the last message has role "system"; a row must end with a user or developer turn',
        ),
        (
            '{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}\n',
            "line 1: the final assistant message must follow a user or developer turn",
        ),
        (
            '{"messages": [{"role": "user", "content": "q"}], "solution": 5}\n',
            'line 1: "solution" must be a non-empty string (the warm-up demonstration)',
        ),
        ("", "train.jsonl: the file has no rows (write one JSON object per line)"),
        ("\n\n", "train.jsonl: the file has no rows"),
    ],
)
def test_each_check_is_an_error_with_file_and_line(tmp_path, content, expected):
    path = _file(tmp_path, content)
    result = _rft(path)
    assert result.exit_code == 1, result.output
    assert (
        f"{path}{'' if expected.startswith('train.jsonl') else ' '}{expected.removeprefix('train.jsonl')}"
        in result.stdout
    )
    assert "INVALID" in result.stdout


def test_text_parts_and_a_bom_are_accepted(tmp_path):
    parts = '{"messages": [{"role": "developer", "content": [{"type": "text", "text": "Add."}, {"type": "text", "text": " 2+2"}]}]}'
    path = _file(tmp_path, b"\xef\xbb\xbf" + GOOD.encode() + b"\r\n" + parts.encode() + b"\n")
    result = _rft(path)
    assert result.exit_code == 0, result.output


def test_blank_lines_are_warnings(tmp_path):
    path = _file(tmp_path, GOOD + "\n\n   \n" + GOOD.replace("2 + 2", "3 + 3") + "\n")
    result = _rft(path)
    assert result.exit_code == 0
    assert f"{path} line 2: blank line (it is skipped; delete it)" in result.stdout
    assert f"{path} line 3: blank line" in result.stdout
    assert "OK: the data is valid (2 warning(s))." in result.stdout


def test_duplicate_prompts_warn_and_fail_with_strict(tmp_path):
    path = _file(tmp_path, GOOD + "\n" + GOOD.replace("What is", "  what IS") + "\n")
    result = _rft(path)
    assert result.exit_code == 0
    message = f"{path} line 2: same prompt as line 1 after normalisation (case, Unicode form, whitespace); remove one of the two rows"
    assert message in result.stdout
    strict = _rft(path, "--strict")
    assert strict.exit_code == 1 and message in strict.stdout


def test_exact_overlap_names_both_lines(tmp_path):
    train = _file(tmp_path, GOOD.replace("2 + 2", "1 + 1") + "\n" + GOOD + "\n")
    valid = _file(tmp_path, GOOD.replace("What", "WHAT") + "\n", "valid.jsonl")
    result = _rft(train, "--valid", valid)
    assert result.exit_code == 1
    assert (
        f"{train} line 2: same prompt as {valid} line 1 after normalisation (case, Unicode form, whitespace); "
        "remove it from the training file"
    ) in result.stdout
    assert "1 exact, 0 near-duplicate" in result.stdout


def _long_row(extra: str = "") -> str:
    prompt = " ".join(f"token{i}" for i in range(40)) + extra
    return json.dumps({"messages": [{"role": "user", "content": prompt}], "answer": "1"})


def test_near_duplicates_warn_and_fail_with_strict(tmp_path):
    train = _file(tmp_path, _long_row(" more") + "\n")
    valid = _file(tmp_path, _long_row() + "\n", "valid.jsonl")
    result = _rft(train, "--valid", valid)
    assert result.exit_code == 0, result.output
    assert (
        f"{train} line 1: near-duplicate of {valid} line 1 (word 3-gram Jaccard 0.97 >= 0.9); remove or rewrite one of them"
        in result.stdout
    )
    assert _rft(train, "--valid", valid, "--strict").exit_code == 1
    assert _rft(train, "--valid", valid, "--near-duplicate-threshold", "0.99").exit_code == 0


def test_overlap_fields_forbid_validation_answers_in_training(tmp_path):
    train = _file(tmp_path, GOOD + "\n")
    valid = _file(tmp_path, GOOD.replace("2 + 2", "3 + 1") + "\n", "valid.jsonl")
    assert _rft(train, "--valid", valid).exit_code == 0
    result = _rft(train, "--valid", valid, "--overlap-fields", "answer,other")
    assert result.exit_code == 1
    assert (
        f'{train} line 1: "answer" has the same value as {valid} line 1; no validation answer may appear '
        'in training (remove or change the row; if "answer" is an answer that different problems share, '
        "such as a number, leave it out of --overlap-fields)"
    ) in " ".join(result.stdout.split())
    assert (
        f'{valid}: no row has the field "other" named in --overlap-fields (check its spelling)'
        in result.stdout
    )


def test_require_demonstrations_checks_training_rows_only(tmp_path):
    demo = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "1+1?"},
                {"role": "assistant", "content": "#### 2"},
            ]
        }
    )
    train = _file(tmp_path, demo + "\n" + GOOD + "\n")
    valid = _file(tmp_path, GOOD.replace("2 + 2", "5 + 5") + "\n", "valid.jsonl")
    assert _rft(train, "--valid", valid).exit_code == 0
    result = _rft(train, "--valid", valid, "--require-demonstrations")
    assert result.exit_code == 1
    assert (
        f'{train} line 2: no warm-up demonstration (add a final assistant message or a "solution" field)'
        in result.stdout
    )
    assert "1 error(s)" in result.stdout
    custom = _rft(train, "--require-demonstrations", "--demonstration-field", "answer")
    assert custom.exit_code == 0, custom.output


def test_format_json_is_exactly_one_document(tmp_path):
    train = _file(tmp_path, GOOD + "\n[1]\n\n")
    result = _rft(train, "--format", "json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert set(report) == {
        "ok",
        "files",
        "errors",
        "warnings",
        "error_counts",
        "warning_counts",
        "stats",
        "overlap",
    }
    assert report["ok"] is False
    assert report["errors"] == [
        {
            "file": str(train),
            "line": 2,
            "column": None,
            "code": "row_not_object",
            "message": f"{train} line 2: the row is a JSON list, not an object (write one JSON object per line)",
        }
    ]
    assert report["warning_counts"] == {"blank_line": 1}
    assert report["stats"]["train"]["rows"] == 1
    ok = _rft(EXAMPLE / "train.jsonl", "--valid", EXAMPLE / "valid.jsonl", "--format", "json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["ok"] is True


def test_max_errors_limits_what_is_shown(tmp_path):
    train = _file(tmp_path, "[1]\n" * 12)
    result = _rft(train, "--max-errors", "2")
    assert result.exit_code == 1
    assert "row_not_object (12, first 2 shown)" in result.stdout
    assert f"{train} line 2:" in result.stdout and f"{train} line 3:" not in result.stdout


def test_tokenizer_stats_and_max_tokens(tmp_path, tiny_model_dir):
    train = _file(tmp_path, GOOD + "\n")
    result = _rft(train, "--tokenizer", tiny_model_dir, "--max-tokens", "8", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # "<|user|>" + 14 characters + "<|end|>" + "<|assistant|>"
    assert report["stats"]["train"]["prompt_tokens"] == {
        "min": 17,
        "median": 17,
        "max": 17,
        "max_tokens": 8,
        "rows_over_max": 1,
    }
    assert (
        report["warnings"][0]["message"]
        == f"{train} line 1: the prompt is 17 tokens, over --max-tokens 8; shorten it or raise the limit"
    )
    assert (
        _rft(train, "--tokenizer", tiny_model_dir, "--max-tokens", "8", "--strict").exit_code == 1
    )


class _FakeGrader:
    def __init__(self, fields: set[str]) -> None:
        self.fields, self.closed = fields, False

    def item_fields(self) -> set[str]:
        return self.fields

    def grade_batch(self, samples, items):
        from rft_cli.graders.base import GradeResult

        return [GradeResult(1.0) for _ in samples]

    def close(self) -> None:
        self.closed = True


def test_grader_fields_must_exist_in_every_row(tmp_path, monkeypatch):
    grader = _FakeGrader({"answer", "reference_answer"})
    monkeypatch.setattr(rft_cli.graders.build, "load_grader", lambda path: grader, raising=False)
    train = _file(tmp_path, GOOD + "\n")
    result = _rft(train, "--grader", EXAMPLE / "grader.yaml")
    assert result.exit_code == 1
    assert (
        f'{train} line 1: missing field "reference_answer" that the grader reads as {{{{ item.reference_answer }}}} '
        "(add it to every row or change the grader)"
    ) in result.stdout
    assert grader.closed
    monkeypatch.setattr(
        rft_cli.graders.build, "load_grader", lambda path: _FakeGrader({"answer"}), raising=False
    )
    assert _rft(train, "--grader", EXAMPLE / "grader.yaml").exit_code == 0


def test_a_broken_grader_file_is_a_usage_error(tmp_path, monkeypatch):
    def broken(path):
        raise GraderError(f"{path}: unknown grader type 'strng_check' (use string_check, ...)")

    monkeypatch.setattr(rft_cli.graders.build, "load_grader", broken, raising=False)
    result = _rft(EXAMPLE / "train.jsonl", "--grader", EXAMPLE / "grader.yaml")
    assert result.exit_code == 2
    assert "unknown grader type 'strng_check'" in result.stderr


@pytest.mark.parametrize(
    "args,expected",
    [
        (["missing.jsonl"], "does not exist"),
        ([EXAMPLE / "train.jsonl", "--valid", "missing.jsonl"], "does not exist"),
        ([EXAMPLE], "directory"),
        ([EXAMPLE / "train.jsonl", "--format", "yaml"], "Invalid value for '--format'"),
        ([EXAMPLE / "train.jsonl", "--max-errors", "0"], "Invalid value for '--max-errors'"),
        (
            [EXAMPLE / "train.jsonl", "--near-duplicate-threshold", "1.5"],
            "Invalid value for '--near-duplicate-threshold'",
        ),
        ([EXAMPLE / "train.jsonl", "--no-such-flag"], "No such option"),
        ([EXAMPLE / "train.jsonl", "--max-tokens", "10"], "--max-tokens needs --tokenizer"),
        (
            [EXAMPLE / "train.jsonl", "--overlap-fields", "reference_answer"],
            "--overlap-fields needs --valid",
        ),
        ([EXAMPLE / "train.jsonl", "--tokenizer", EXAMPLE], "--tokenizer"),
    ],
)
def test_usage_errors_exit_2_without_a_traceback(args, expected):
    result = _rft(*args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["messages", "role", "content", "solution", "type", "text", "x"])
            | st.text(max_size=3),
            inner,
            max_size=3,
        )
    ),
    max_leaves=12,
)
_line = st.one_of(
    st.binary(max_size=40),
    _json.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda msgs: json.dumps({"messages": msgs}).encode(), st.lists(_json, max_size=3)),
)


@pytest.mark.slow  # 200 examples, 8-11 s on 2 cores
@pytest.mark.guarantee
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(train=st.lists(_line, max_size=6), valid=st.lists(_line, max_size=4), as_json=st.booleans())
def test_random_bytes_and_json_never_give_a_traceback(tmp_path, train, valid, as_json):
    train_path = _file(tmp_path, b"\n".join(train), "train.jsonl")
    valid_path = _file(tmp_path, b"\n".join(valid), "valid.jsonl")
    args = [train_path, "--valid", valid_path, "--overlap-fields", "x", "--strict"] + (
        ["--format", "json"] if as_json else []
    )
    result = _rft(*args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code in (0, 1), result.output
    if as_json:
        assert json.loads(result.stdout)["ok"] is (result.exit_code == 0)


@pytest.mark.parametrize(
    "content,expected",
    [
        ("[" * 100_000 + "\n", "line 1: invalid JSON (nested too deeply)"),
        ('{"x": ' + "1" * 5000 + "}\n", "line 1: invalid JSON (Exceeds the limit (4300 digits)"),
    ],
)
def test_pathological_json_is_an_error_not_a_crash(tmp_path, content, expected):
    path = _file(tmp_path, content)
    result = _rft(path)
    assert result.exit_code == 1
    assert f"{path} {expected}" in result.stdout
    assert "empty_file" not in result.stdout  # a file of bad lines is not an empty file


def test_json_stats_say_how_the_near_duplicate_search_ran():
    result = _rft(EXAMPLE / "train.jsonl", "--valid", EXAMPLE / "valid.jsonl", "--format", "json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)["stats"]
    search, train_rows = stats["overlap"]["near_duplicate_search"], stats["train"]["rows"]
    assert (
        search["rows_searched"] == search["rows_exact"] == train_rows
        and search["rows_estimated"] == 0
    )
    assert (
        search["estimate"] == "minhash_lsh"
        and 0.99 <= search["estimate_recall_at_threshold"] <= 1.0
    )


def test_an_overlap_field_whose_values_repeat_is_named_as_an_answer(tmp_path):
    """Regression (issue 27): the docs' `--overlap-fields reference_answer` failed any numeric
    dataset whose answers repeat (283 errors on 400 word problems) with nothing saying why."""
    rows = [
        {
            "messages": [{"role": "user", "content": f"{a}+{b}=?"}],
            "answer": str(a + b),
            "id": f"p{a}-{b}",
        }
        for a in range(10)
        for b in range(10)
    ]
    train = _file(tmp_path, "".join(json.dumps(r) + "\n" for r in rows[::2]))
    valid = _file(tmp_path, "".join(json.dumps(r) + "\n" for r in rows[1::2]), "valid.jsonl")
    result = _rft(train, "--valid", valid, "--overlap-fields", "answer")
    text = " ".join(result.stdout.split())
    assert result.exit_code == 1
    assert '"answer" takes 18 values over 50 rows, so it does not identify a task' in text, text
    assert "name a field with one value per task in --overlap-fields (an id" in text
    assert "overlap_field_repeats" in text
    result = _rft(train, "--valid", valid, "--overlap-fields", "id")
    assert result.exit_code == 0 and "overlap_field_repeats" not in result.stdout, result.stdout
