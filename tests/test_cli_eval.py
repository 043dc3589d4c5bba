"""`rft eval` from the command line: samples files, the --min-score gate, a tiny model end to end."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from tests.eval_fakes import rows_with_answers

NUMERIC_GRADER = 'type: numeric\nname: answer\ninput: "{{ sample.output_text }}"\nreference: "{{ item.answer }}"\n'

runner = CliRunner()


def _jsonl(path, objs):
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return str(path)


@pytest.fixture
def files(tmp_path):
    data = _jsonl(tmp_path / "rows.jsonl", rows_with_answers([4, 7, 3, 9]))
    grader = tmp_path / "grader.yaml"
    grader.write_text(NUMERIC_GRADER)
    return tmp_path, data, str(grader)


def _eval(data, grader, *args):
    """`rft eval --data DATA --grader GRADER ARGS...` through the CLI runner."""
    return runner.invoke(app, ["eval", "--data", data, "--grader", grader, *args])


def _samples(tmp_path, outputs):
    return _jsonl(tmp_path / "samples.jsonl", [{"output_text": t} for t in outputs])


def test_samples_file_is_graded(files):
    tmp_path, data, grader = files
    samples = _samples(tmp_path, ["4", "the answer is 8", "so: 3", "nothing"])
    result = runner.invoke(
        app,
        ["eval", "--data", data, "--grader", grader, "--samples-file", samples, "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)["models"]
    assert report["model"] == "samples.jsonl"
    assert (report["rows"], report["samples"], report["mean_reward"]) == (4, 1, 0.5)
    assert report["pass_at"] == {"1": 0.5}
    assert report["errors"] == {}
    assert report["maj_at_k"] == 0.5
    assert report["tokens_per_second"] is None


@pytest.mark.parametrize(
    "min_score,code,verdict",
    [
        ("0.4", 0, "Gate passed"),
        ("0.5", 0, "Gate passed"),  # equal to the mean reward: not below it
        ("0.6", 1, "Gate failed"),
    ],
)
def test_min_score_gate_exit_codes(files, min_score, code, verdict):
    tmp_path, data, grader = files
    samples = _samples(tmp_path, ["4", "8", "3", "0"])  # mean reward 0.5
    result = _eval(data, grader, "--samples-file", samples, "--min-score", min_score)
    assert result.exit_code == code, result.output
    assert verdict in result.stderr
    assert "0.5000" in result.stdout


def test_grader_errors_are_counted_by_kind(files):
    tmp_path, _, grader = files
    data = _jsonl(tmp_path / "rows.jsonl", rows_with_answers([4, "not a number", 5]))
    samples = _jsonl(
        tmp_path / "s.jsonl", [{"row": i, "output_text": "4"} for i in (0, 0, 1, 1, 2, 2)]
    )
    result = runner.invoke(
        app,
        ["eval", "--data", data, "--grader", grader, "--samples-file", samples, "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)["models"]
    assert report["samples"] == 2
    assert report["errors"] == {"reference_parse_error": 2}
    assert report["pass_at"] == {"1": pytest.approx(1 / 3), "2": pytest.approx(1 / 3)}


def test_bad_grader_file_exits_2(files):
    tmp_path, data, _ = files
    bad = tmp_path / "bad.yaml"
    bad.write_text("type: no_such_grader\n")
    samples = _samples(tmp_path, ["4", "7", "3", "9"])
    result = runner.invoke(
        app, ["eval", "--data", data, "--grader", str(bad), "--samples-file", samples]
    )
    assert result.exit_code == 2
    assert "bad.yaml" in result.stderr


def test_min_score_gates_on_the_first_model_only(files):
    tmp_path, data, grader = files
    both = [
        {"model": m, "row": i, "output_text": t}
        for m, outs in [("weak", ["0", "0", "0", "0"]), ("strong", ["4", "7", "3", "9"])]
        for i, t in enumerate(outs)
    ]
    samples = _jsonl(tmp_path / "two.jsonl", both)
    result = _eval(
        data, grader, "--samples-file", samples, "--min-score", "0.9", "--format", "json"
    )
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert [m["model"] for m in doc["models"]] == ["weak", "strong"]
    assert doc["gate"] == "failed"


def test_limit_evaluates_the_first_rows(files):
    tmp_path, data, grader = files
    samples = _samples(tmp_path, ["4", "7", "0", "0"])
    result = _eval(
        data,
        grader,
        "--samples-file",
        samples,
        "--limit",
        "2",
        "--format",
        "json",
        "--min-score",
        "1",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["models"][0]["rows"] == 2


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "nothing to evaluate"),
        (["--samples-file", "MISSING.jsonl"], "MISSING.jsonl"),
        (["--model", "./no/such/model"], "no such model folder"),
        (["--samples", "0", "--model", "x"], "--samples"),
        (["--format", "yaml", "--model", "x"], "--format"),
        (
            ["--model", "x", "--output", "/no/such/folder/out.jsonl"],
            "does not exist or is not writable",
        ),
    ],
)
def test_usage_errors_exit_2(files, args, message):
    _, data, grader = files
    result = _eval(data, grader, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_plot_must_be_png_or_html(files):
    tmp_path, data, grader = files
    samples = _samples(tmp_path, ["4", "7", "3", "9"])
    result = _eval(data, grader, "--samples-file", samples, "--plot", str(tmp_path / "chart.txt"))
    assert result.exit_code == 2
    assert "must be a .png or .html" in result.stderr


def test_missing_data_file_exits_2(files):
    tmp_path, _, grader = files
    result = runner.invoke(
        app, ["eval", "--data", str(tmp_path / "nope.jsonl"), "--grader", grader, "--model", "x"]
    )
    assert result.exit_code == 2


def test_row_without_the_graders_field_fails_before_generating(files):
    tmp_path, _, grader = files
    data = _jsonl(
        tmp_path / "bad.jsonl",
        [
            {"messages": [{"role": "user", "content": "2+2?"}], "answer": 4},
            {"messages": [{"role": "user", "content": "3+3?"}]},
        ],
    )
    result = runner.invoke(
        app, ["eval", "--data", data, "--grader", grader, "--model", "./never/loaded"]
    )
    assert result.exit_code == 1
    assert 'bad.jsonl line 2: missing field "answer"' in result.stderr


def test_bad_samples_file_names_the_line(files):
    tmp_path, data, grader = files
    samples = _jsonl(tmp_path / "s.jsonl", [{"output_text": "4"}, {"text": "7"}])
    result = runner.invoke(
        app, ["eval", "--data", data, "--grader", grader, "--samples-file", samples]
    )
    assert result.exit_code == 1
    assert "s.jsonl line 2" in result.stderr


@pytest.mark.parametrize("name", ["chart.png", "chart.html"])
def test_plot_of_a_comparison(files, name):
    tmp_path, data, grader = files
    samples = _samples(tmp_path, ["4", "8", "3", "0"])
    result = _eval(data, grader, "--samples-file", samples, "--plot", str(tmp_path / name))
    assert result.exit_code == 0, result.output
    assert (tmp_path / name).stat().st_size > 5_000
    if name.endswith(".html"):
        text = (tmp_path / name).read_text()
        assert "<td>samples.jsonl</td><td>4</td><td>1</td><td>0.5000</td>" in text
        assert "data:image/png;base64," in text


def test_tiny_model_end_to_end(files, tiny_model_dir):
    """A model folder and a run folder (meaning its final/), sampled, graded and written out."""
    tmp_path, data, grader = files
    shutil.copytree(tiny_model_dir, tmp_path / "run" / "final")
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    out = tmp_path / "results.jsonl"
    result = runner.invoke(
        app,
        [
            "eval",
            "--model",
            tiny_model_dir,
            "--model",
            str(tmp_path / "run"),
            "--data",
            data,
            "--grader",
            grader,
            "--samples",
            "2",
            "--max-new-tokens",
            "6",
            "--batch-size",
            "3",
            "--output",
            str(out),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["temperature"] == 1.0  # --samples > 1 samples at T=1 unless told otherwise
    first, second = doc["models"]
    assert (first["rows"], first["samples"]) == (4, 2)
    assert first["tokens_per_second"] > 0
    assert 0 < first["generated_tokens"] <= 4 * 2 * 6
    # Same weights, same seed: the run folder's final/ generates exactly what the model folder does.
    assert first["mean_reward"] == second["mean_reward"]
    assert first["generated_tokens"] == second["generated_tokens"]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 2 * 4 * 2
    assert {line["model"] for line in lines} == {tiny_model_dir, str(tmp_path / "run")}
    assert lines[0]["prompt"] == [{"role": "user", "content": "question 0"}]
    assert {"output_text", "reward", "sub_rewards", "errors", "num_tokens", "truncated"} <= set(
        lines[0]
    )


def test_tiny_model_text_table(files, tiny_model_dir):
    tmp_path, data, grader = files
    samples = _samples(tmp_path, ["4", "7"])
    result = runner.invoke(
        app,
        [
            "eval",
            "--model",
            tiny_model_dir,
            "--samples-file",
            samples,
            "--data",
            data,
            "--grader",
            grader,
            "--max-new-tokens",
            "4",
            "--limit",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "mean reward" in result.stdout and "tokens/s" in result.stdout
    # The model first, then the samples file (a perfect score), each on its own line of the table.
    assert tiny_model_dir in result.stdout
    assert result.stdout.index(tiny_model_dir) < result.stdout.index("samples.jsonl")
    assert "Evaluating" in result.stderr and "Grading" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "min_score,model,code,message",
    [
        ("0", "{tiny}", 0, "gate passed"),
        ("0.5", "{tiny}", 1, "gate FAILED"),
    ],
)
def test_ci_gate_example_script(files, tiny_model_dir, min_score, model, code, message):
    """examples/ci_gate.sh turns `rft eval` exit codes into a CI verdict (a random model scores 0)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tmp_path, data, grader = files
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "RFT": f"{sys.executable} -m rft_cli",
        "DATA": data,
        "GRADER": grader,
        "MIN_SCORE": min_score,
        "LIMIT": "2",
        "OUT": str(tmp_path / "ci"),
        "PYTHONPATH": str(root),
        "RFT_EVAL_ARGS": "--max-new-tokens 8",
    }
    args = [
        "bash",
        str(root / "examples" / "ci_gate.sh"),
        model.format(tiny=tiny_model_dir),
        tiny_model_dir,
    ]
    proc = subprocess.run(args, env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert message in proc.stdout + proc.stderr
    if code == 0:
        # The same model twice: the no-regression gate compares equal scores and passes.
        assert re.search(r"fine-tuned (\S+) vs base \1\n", proc.stdout), proc.stdout
        assert json.loads((tmp_path / "ci" / "eval.json").read_text())["gate"] == "passed"


def test_maj_at_k_with_the_math_grader(tmp_path):
    """A real answer-extracting grader: majority votes over math-verify's parsed answers."""
    data = _jsonl(tmp_path / "rows.jsonl", rows_with_answers(["1/2", "2"]))
    grader = tmp_path / "math.yaml"
    grader.write_text('type: math\nname: math\nreference: "{{ item.answer }}"\n')
    outputs = [
        ["\\boxed{0.5}", "\\boxed{1/3}", "\\boxed{1/3}"],
        ["\\boxed{2}", "so \\boxed{2}", "\\boxed{3}"],
    ]
    lines = [{"row": r, "output_text": t} for r, texts in enumerate(outputs) for t in texts]
    samples = _jsonl(tmp_path / "s.jsonl", lines)
    args = [
        "eval",
        "--data",
        data,
        "--grader",
        str(grader),
        "--samples-file",
        samples,
        "--format",
        "json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)["models"]
    assert report["pass_at"] == {"1": pytest.approx(0.5), "3": pytest.approx(1.0)}
    assert report["maj_at_k"] == 0.5  # row 0 votes 1/3 (wrong), row 1 votes 2 (right)


def test_hub_like_model_folder_end_to_end(files, hub_like_model_dir):
    """A folder shaped like Qwen2.5-Instruct's (BPE, ChatML, <|im_end|> EOS, <|endoftext|> pad, two EOS
    ids, top_k 20 in generation_config.json): sampled, graded, and the texts hold no special tokens."""
    tmp_path, data, grader = files
    out = tmp_path / "results.jsonl"
    args = [
        "--model",
        hub_like_model_dir,
        "--samples",
        "3",
        "--max-new-tokens",
        "6",
        "--output",
        str(out),
        "--format",
        "json",
    ]
    result = _eval(data, grader, *args)
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)["models"]
    assert (report["rows"], report["samples"]) == (4, 3)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(1 <= line["num_tokens"] <= 6 for line in lines)
    assert not any("<|" in line["output_text"] for line in lines)
    # A near-uniform model over 384 tokens: 12 samples of 6 tokens are all different (no top_k 20).
    assert len({line["output_text"] for line in lines}) == len(lines)


def test_help_says_which_sampling_settings_are_used():
    result = runner.invoke(app, ["eval", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "softmax(logits / --temperature)" in text and "generation_config.json" in text
