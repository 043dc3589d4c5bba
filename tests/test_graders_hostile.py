"""Issue 24, where a policy's answer, a dataset row or a server reply is the attacker: the built-in
graders are bounded in time and memory, and nothing they read can raise, hang or leak.

One regression test per numbered item of the issue (each fails on d6643b4); the generated hostile
inputs for every grader type are in tests/test_hostile_fuzz.py.
"""

from __future__ import annotations

import random
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rft_cli.graders import answers, build_grader, lcs

# -- 6. numeric: the default answer patterns cannot backtrack -----------------------------------

SVAMP = {"type": "numeric", "reference": "{{ item.reference_answer }}", "partial_credit": 0.1}


def _seconds(call, *args):
    started = time.perf_counter()
    call(*args)
    return time.perf_counter() - started


def test_numeric_answer_is_followed_by_spaces_is_graded_at_once():
    """The SVAMP grader took 111 s on "The answer is" + 2,000 spaces + a letter: the regex
    `answer\\s*(?:is|:|=)\\s*[:=]?\\s*[<(\\[*]*\\s*(NUMBER)` backtracks cubically over the spaces.
    1,000 spaces took 5 s before; a megabyte of them now takes milliseconds."""
    grader = build_grader(SVAMP)
    for spaces in (1_000, 1_000_000):
        text = "The answer is" + " " * spaces + "x"
        assert _seconds(grader.grade, text, {"reference_answer": "7"}) < 0.5
    assert grader.grade("The answer is  <7>.", {"reference_answer": "7"}).reward == 1.0


def test_numeric_hostile_reference_is_read_at_once():
    """The same through the reference (read with the same patterns when it is not a number), and
    a number followed by spaces and a letter, which `\\s*(NUMBER)\\s*\\.?\\s*` read in quadratic time."""
    grader = build_grader(SVAMP)
    for reference in ("The answer is" + " " * 1_000 + "x", "5" + " " * 20_000 + "x"):
        started = time.perf_counter()
        result = grader.grade("#### 5", {"reference_answer": reference})
        assert time.perf_counter() - started < 0.5
    assert result.reward == 1.0  # "5   ...   x": its first number


HOSTILE_ANSWERS = {
    "answer_spaces": lambda n: "The answer is" + " " * n + "x",
    "hash_spaces": lambda n: "#### " + " \t" * (n // 2) + "x",
    "hashes": lambda n: "####" * (n // 4),
    "hash_words": lambda n: "#### " + "a " * (n // 2),
    "boxed_groups": lambda n: "\\boxed{" + "{a}" * (n // 3),
    "boxed_open": lambda n: "\\boxed{" * (n // 7) + "}",
    "answer_repeated": lambda n: "answer is " * (n // 10),
    "answer_parens": lambda n: "answer is " + "(" * n + "x",
    "number_spaces": lambda n: "5" + " " * n + "x",
    "digits_spaces": lambda n: "1" * (n // 2) + " " * (n // 2) + "x",
    "signs": lambda n: "- " * (n // 2),
    "commas": lambda n: "1," * (n // 2),
    "fractions": lambda n: "\\frac{" * (n // 6),
    "frac_spaces": lambda n: "\\frac{a}" + " " * n + "x",
    "arabic_digits": lambda n: "\u0663" * n,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HOSTILE_ANSWERS))
def test_numeric_is_linear_on_hostile_answers(name):
    """Ten times the text takes about ten times as long (under 30x allows for a shared machine);
    a megabyte of any of them as an answer or as a reference stays well under a second."""
    grader = build_grader({"type": "numeric", "reference": "{{ item.r }}"})
    small, large = HOSTILE_ANSWERS[name](100_000), HOSTILE_ANSWERS[name](1_000_000)
    for answer, reference in ((small, "1"), (large, "1"), ("1", small), ("1", large)):
        grader._cache.clear()
        took = _seconds(grader.grade, answer, {"r": reference})
        assert took < 2.0, (name, len(answer), len(reference), took)


_PIECES = [
    "####", "\\boxed", "{", "}", "answer", "ANSWER", " is", ":", "=", "  ", " ", "\n", "\t", "\r",
    "5", "12", "-", "$", ",", ".", "%", "/", "e", "x", "<", "(", "*", "\u2212", "\u0663", "1,234",
    "\u00a0", "\\frac",
]  # fmt: skip


@settings(max_examples=800, deadline=None, derandomize=True, database=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=14).map("".join))
def test_the_scanners_find_what_the_patterns_find(text):
    """The linear scanners give exactly the captures of `re.findall` with the documented
    patterns, and the whole-number check the match of `\\s*(NUMBER)\\s*\\.?\\s*`."""
    for scanner in answers.DEFAULT_SCANNERS:
        found = [m[-1] if type(m) is tuple else m for m in scanner.findall(text)]
        assert found == re.findall(scanner.pattern, text), scanner.pattern
    whole = re.fullmatch(rf"\s*({answers.NUMBER})\s*\.?\s*", text)
    assert answers._whole_number(text) == (whole.group(1) if whole else None)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("75 - 30", 30.0),  # issue 27: the last number of a subtraction, not -30
        ("so 75 - 30 = 45 and then 12 -7", 7.0),
        ("75-30", 30.0),
        ("(2) -1", 1.0),
        ("it is -5", -5.0),
        ("from 3, -4", -4.0),
        ("x = \u22127", -7.0),
        ("y" * 300 + " 75 - 30", 30.0),
        ("y" * 300 + " it is -5", -5.0),
    ],
)
def test_numeric_reads_a_binary_minus_as_an_operator(text, expected):
    """Issue 27: `numeric` read "75 - 30" as -30 when it fell back to the last number: a sign
    after an operand (and any spaces) is a binary minus."""
    assert answers.extract_answer(text, answers.DEFAULT_REGEXES) == expected


def test_numeric_reads_a_final_non_ascii_digit_in_a_long_answer():
    """Past 256 characters only ASCII digits were looked for: "... ٣" read as the earlier 7."""
    assert answers.last_number_in("7 " + "y" * 300 + " \u0663") == 3.0
    assert answers.last_number_in("y" * 300 + " \uff14\uff12") == 42.0  # full-width digits
    assert answers.last_number_in("\u0663") == 3.0  # as a short answer always did


def test_numeric_reads_a_reference_with_underscores_as_python_does():
    """A reference "1_000" was read as 1 (the first number of "1_000"); float() reads 1000."""
    grader = build_grader({"type": "numeric", "reference": "{{ item.a }}", "abs_tol": 0})
    assert grader.grade("#### 1000", {"a": "1_000"}).reward == 1.0
    assert grader.grade("#### 1", {"a": "1_000"}).reward == 0.0


# -- 7. similarity: LCS metrics are bounded ----------------------------------------------------


def _similarity(metric):
    return build_grader(
        {
            "type": "text_similarity",
            "input": "{{ sample.output_text }}",
            "reference": "{{ item.r }}",
            "evaluation_metric": metric,
        }
    )


def _words(n, seed=0):
    rnd = random.Random(seed)
    return " ".join(rnd.choice(["the", "cat", "sat", "on", "a", "mat"]) for _ in range(n))


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["rouge_l", "fuzzy_match"])
def test_lcs_metrics_grade_a_megabyte_quickly_in_little_memory(metric):
    """rouge_l on a 1 MB answer against a 5 KB reference took 71 s and 1.76 GB (rouge-score's
    quadratic table); it now takes under a second, in memory linear in the texts, and two
    megabyte texts (English or Chinese) take about a second."""
    import tracemalloc

    grader = _similarity(metric)
    tracemalloc.start()
    result = grader.grade(_words(40_000), {"r": _words(1_200, 1)})  # rouge-score: 48 M cells
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 30 * 2**20 and 0.0 < result.reward < 1.0, peak
    for answer, reference in (
        (_words(250_000), _words(1_200, 1)),
        (_words(250_000), _words(250_000, 1)),
        ("\u6771\u4eac" * 500_000, "\u4eac\u6771" * 30_000),
    ):
        took = _seconds(grader.grade, answer, {"r": reference})
        assert took < 6, (len(answer), len(reference), took)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    a=st.lists(st.sampled_from("ab東 c1"), max_size=80).map("".join),
    b=st.lists(st.sampled_from("ab東 c1"), max_size=80).map("".join),
)
def test_lcs_metrics_equal_the_libraries_they_replace(a, b):
    """fuzzy_match equals rapidfuzz's fuzz.ratio / 100 and rouge_l rouge-score's rougeL, to the
    bit, with the bit-parallel LCS forced through several blocks."""
    from rapidfuzz import fuzz
    from rouge_score import rouge_scorer

    from rft_cli.graders import similarity

    scorer = rouge_scorer.RougeScorer(
        ["rougeL"], use_stemmer=False, tokenizer=similarity.RougeTokenizer()
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lcs, "BLOCK", 8)
        patch.setattr(lcs, "_SMALL_WORK", 0)
        assert similarity._fuzzy(a, b) == fuzz.ratio(a, b) / 100
        assert similarity._RougeL()(a, b) == scorer.score(b, a)["rougeL"].fmeasure


def test_lcs_past_the_work_limit_is_a_lower_bound(monkeypatch):
    """Past WORK_LIMIT the prefixes are compared: never more than the exact LCS."""
    rnd = random.Random(5)
    a = "".join(rnd.choice("abc") for _ in range(3000))
    b = "".join(rnd.choice("abc") for _ in range(2000))
    exact = lcs.lcs_length(a, b)
    monkeypatch.setattr(lcs, "WORK_LIMIT", 500_000)
    monkeypatch.setattr(lcs, "_SMALL_WORK", 0)
    assert 0 < lcs.lcs_length(a, b) < exact
    assert lcs.lcs_length(a[:200], b) == lcs.lcs_length(b, a[:200])  # 200 x 2000 fits: exact


# -- 10. judges: no redirect carries the key, the timeout is a deadline, the reply is capped ------


class _Server:
    """A loopback HTTP server whose handler is a plain function `(handler) -> None`."""

    def __init__(self, respond):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802  (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization")}
                )
                try:
                    respond(self)
                except OSError:  # the client hung up (what the cap and the deadline do)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _judge(url, timeout=5.0):
    return build_grader(
        {
            "type": "score_model",
            "model": "judge",
            "base_url": url,
            "api_key_env": "RFT_TEST_JUDGE_KEY",
            "timeout": timeout,
            "input": [{"role": "user", "content": "{{ sample.output_text }}"}],
        }
    )


def _completion(handler, content='{"steps": [], "result": 1}'):
    import json

    body = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.setenv("RFT_TEST_JUDGE_KEY", "sk-secret-123")
    return "Bearer sk-secret-123"


def test_the_judge_never_follows_a_redirect_with_its_key(secret):
    """A base_url answering 302 to another origin received the Authorization header there, and
    the redirected reply was scored. Redirects are refused: a counted server error."""
    elsewhere = _Server(_completion)
    status = {"code": 302}

    def redirect(handler):
        handler.send_response(status["code"])
        handler.send_header("Location", elsewhere.url + "/chat/completions")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    first = _Server(redirect)
    try:
        for status["code"] in (301, 302, 303, 307, 308):
            result = _judge(first.url).grade("x", {})
            assert result.reward == 0.0 and result.errors == {"model_grader_server_error": 1}
            assert "does not follow redirects" in result.details["model_grader_server_error"]
        assert first.requests and all(r["auth"] == secret for r in first.requests)
        assert elsewhere.requests == []
    finally:
        first.close()
        elsewhere.close()


def _drip(handler, headers_first=True):
    handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
    if headers_first:
        handler.wfile.write(b"Content-Length: 100000\r\n\r\n")
    for _ in range(200):  # one byte every 0.1 s: each read is quick, the whole never ends
        handler.wfile.write(b" " if headers_first else b"X")
        handler.wfile.flush()
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("headers_first", [True, False], ids=["body", "headers"])
def test_the_judge_timeout_is_a_deadline_for_the_whole_reply(secret, headers_first):
    """A server that drips one byte at a time held a 2 s grade for 20 s: the timeout applied to
    each socket read. It now bounds the whole request."""
    server = _Server(lambda handler: _drip(handler, headers_first))
    try:
        started = time.monotonic()
        result = _judge(server.url, timeout=1.0).grade("x", {})
        assert time.monotonic() - started < 3
        assert result.errors == {"model_grader_server_error": 1}
        assert "within the 1 s timeout" in result.details["model_grader_server_error"]
    finally:
        server.close()


def test_the_judge_goes_through_the_environments_proxy_and_a_tool_endpoint_does_not(
    secret, monkeypatch
):
    """The judge and tool endpoints share one client (rft_cli/http_post.py). The judge, written
    on urllib, always honoured HTTP(S)_PROXY; a tool endpoint, usually on this machine, never
    did. Each keeps its own behaviour."""
    from rft_cli.config import ToolSettings
    from rft_cli.tools import ToolRequest, load_toolbox

    def proxy_answers(handler):  # a completion the judge can read, an output the tool can
        _completion(handler)

    proxy = _Server(proxy_answers)
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url.removesuffix("/v1"))
    unreachable = "http://judge.invalid:9/v1"
    try:
        result = _judge(unreachable).grade("x", {})
        assert result.errors == {} and proxy.requests, result.details
        assert proxy.requests[0]["path"] == unreachable + "/chat/completions"
        assert proxy.requests[0]["auth"] == secret
        seen = len(proxy.requests)
        tool = ToolSettings(name="lookup", server_url=unreachable, timeout=2, retries=0)
        with load_toolbox([tool]) as box:
            outcome = box.run([ToolRequest("lookup", "{}", call_id="call_1")])[0]
        assert outcome.error and len(proxy.requests) == seen  # went direct, and failed
    finally:
        proxy.close()


def test_the_judge_reads_no_more_than_the_reply_cap(secret, monkeypatch):
    """A 300 MB reply was read whole into memory; past MAX_REPLY_BYTES (8 MiB; 64 KiB here) the
    judge stops reading and counts a server error."""
    import tracemalloc

    from rft_cli.graders import judge

    monkeypatch.setattr(judge, "MAX_REPLY_BYTES", 1 << 16)

    def flood(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(64 << 20))
        handler.end_headers()
        for _ in range(1024):
            handler.wfile.write(b"a" * (64 << 10))

    server = _Server(flood)
    try:
        tracemalloc.start()
        result = _judge(server.url).grade("x", {})
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert result.errors == {"model_grader_server_error": 1} and peak < 8 << 20, peak
        assert (
            "over 0 MiB" in result.details["model_grader_server_error"]
            or "read no further" in (result.details["model_grader_server_error"])
        )
    finally:
        server.close()


def test_a_judge_reply_that_is_no_completion_is_a_counted_error(secret):
    server = _Server(lambda handler: _raw(handler, b'{"choices": 5}'))
    try:
        result = _judge(server.url).grade("x", {})
        assert result.errors == {"model_grader_server_error": 1}
        assert "not a chat completion" in result.details["model_grader_server_error"]
    finally:
        server.close()


def _raw(handler, body):
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


# -- 9. Rich markup and terminal controls in what rft prints -----------------------------------

REGEX = {"type": "regex", "pattern": "(.+)", "reference": "{{ item.a }}"}
HOSTILE_TEXT = "[/x] [link=https://evil.example]click[/link] \x1b]0;title\x07 \u202eevil"


def _grade_cli(tmp_path, spec, *args):
    import json

    from typer.testing import CliRunner

    from rft_cli.cli import app

    path = tmp_path / "grader.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    result = CliRunner().invoke(app, ["grade", str(path), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    return result


def test_markup_in_an_answer_is_printed_as_text(tmp_path):
    """A regex capture `[/x]` in `rft grade`'s text output raised MarkupError (a traceback), and
    `[link=...]` was rendered as a link; an ESC reached the terminal as it was."""
    result = _grade_cli(tmp_path, REGEX, "--item", '{"a": "y"}', "--sample", HOSTILE_TEXT)
    assert result.exit_code == 0, result.output
    shown = "answer: [/x] [link=https://evil.example]click[/link] \\x1b]0;title\\x07 \\u202eevil"
    assert shown in result.output and "\x1b" not in result.output


def test_markup_in_a_sub_grader_name_is_printed_as_text(tmp_path):
    spec = {"type": "multi", "graders": {"[/b]": REGEX}, "calculate_output": "1"}
    result = _grade_cli(tmp_path, spec, "--item", '{"a": "y"}', "--sample", "y")
    assert result.exit_code == 0 and "  [/b]: 1" in result.output, result.output


def test_markup_in_a_samples_file_model_name_is_printed_as_text(tmp_path):
    """`rft eval --samples-file` puts each line's `model` in its table: markup there crashed too."""
    import json

    from typer.testing import CliRunner

    from rft_cli.cli import app

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}], "a": "y"}) + "\n")
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"row": 0, "output_text": "y", "model": "[/m]"}) + "\n")
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(REGEX))
    args = ["eval", "--data", str(rows), "--grader", str(grader), "--samples-file", str(samples)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "[/m]" in result.output, result.output


def test_a_name_that_is_no_text_is_refused_when_the_grader_is_built(tmp_path):
    """A `multi` sub-grader named "\\ud800" (a lone surrogate, from JSON) gave a
    UnicodeEncodeError traceback when printed or written with --output."""
    spec = {"type": "multi", "graders": {"\ud800": REGEX}, "calculate_output": "1"}
    result = _grade_cli(tmp_path, spec, "--item", "{}", "--sample", "y")
    assert result.exit_code == 2 and "lone surrogate" in result.output, result.output
    result = _grade_cli(tmp_path, {**REGEX, "name": "\udfff"}, "--item", "{}", "--sample", "y")
    assert result.exit_code == 2 and "lone surrogate" in result.output, result.output


# -- 13. grader files and values accepted, then failing every grade ---------------------------


@pytest.mark.parametrize(
    "spec,named",
    [
        ({"type": "math", "reference": "1", "timeout": float("inf")}, "timeout"),
        ({"type": "math", "reference": "1", "timeout": 1e300}, "timeout"),
        (
            {
                "type": "python",
                "source": "def grade(s, i):\n    return 1\n",
                "memory_mb": 10**15,
            },
            "memory_mb",
        ),
        (
            {
                "type": "json_match",
                "input": "{{ sample.output_text }}",
                "reference": {"a": 1, "b": 2},
                "fields": {"a": float("inf"), "b": 1},
            },
            "fields.a",
        ),
        (
            {
                "type": "score_model",
                "model": "m",
                "base_url": "http://127.0.0.1:9",
                "input": [{"role": "user", "content": "x"}],
                "timeout": 1e300,
            },
            "timeout",
        ),
        ({"type": "numeric", "reference": "1", "abs_tol": float("inf")}, "abs_tol"),
    ],
    ids=["math_inf", "math_huge", "memory", "weight_inf", "judge_timeout", "abs_tol_inf"],
)
def test_values_that_fail_every_grade_are_refused_when_built(tmp_path, spec, named):
    """`timeout: .inf`, `memory_mb: 1e15` and a json_match weight `.inf` were accepted, and then
    every grade failed (an OverflowError, a worker that never started) or a wrong field scored 1.0."""
    import yaml

    path = tmp_path / "grader.yaml"
    path.write_text(yaml.safe_dump(spec))
    from typer.testing import CliRunner

    from rft_cli.cli import app

    result = CliRunner().invoke(
        app, ["grade", str(path), "--item", "{}", "--sample", '{"a": 5, "b": 2}']
    )
    assert result.exit_code == 2 and named in result.output, result.output


@pytest.mark.parametrize(
    "pattern",
    [
        "(?:a{65535}){65535}",
        "((a{100}){100}){100}",
        "(?i)(?:[ab]{1000}){1000}",
        "(\\w{1000}){1000}",
    ],
)
def test_a_regex_that_compiles_to_gigabytes_is_refused_at_once(pattern):
    """`(?:a{65535}){65535}` (19 bytes) ran past 7 GB and 30 s in `regex.compile`; the repeats
    of a pattern now multiply out to at most MAX_PATTERN_UNITS, checked before compiling."""
    from rft_cli.errors import GraderError

    started = time.monotonic()
    with pytest.raises(GraderError, match="multiplies out"):
        build_grader({"type": "regex", "pattern": pattern})
    assert time.monotonic() - started < 1


@pytest.mark.slow
def test_a_verbose_regex_is_compiled_under_a_memory_limit_first():
    """In verbose mode a `#` comment can hide a `)`, so the estimate cannot be trusted: the pattern
    is compiled in a child process under a 128 MB limit first."""
    from rft_cli.errors import GraderError

    with pytest.raises(GraderError, match="needs more than 128 MB"):
        build_grader({"type": "regex", "pattern": "(?x)(?:a{1000} # )\n ){1000}"})
    assert (
        build_grader({"type": "regex", "pattern": "(?x) a b # c\n (d)"}).grade("abd", {}).reward
        == 1
    )


def test_an_import_of_a_module_without_a_spec_is_not_a_traceback(monkeypatch):
    """`import __main__` in a python grader's source: find_spec raised ValueError where
    `__main__.__spec__` is None (the `rft` console script), a traceback at build time."""
    import sys
    import types

    from rft_cli.graders.python_grader import check_source

    monkeypatch.setitem(sys.modules, "specless_module", types.ModuleType("specless_module"))
    check_source("import specless_module\ndef grade(sample, item):\n    return 1.0\n", "source")
