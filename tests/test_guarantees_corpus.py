"""Replays tests/corpus/: every input that once gave a traceback, by target folder.

Each folder names how its files are fed to `rft` and the exit code they must now give; the message
must name the file (or flag) at fault and no traceback may appear. To add a case, drop the input
into the folder of its target (see tests/corpus/README.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parent / "corpus"
GRADER = str(ROOT / "data" / "example" / "grader.yaml")
RECIPE = str(ROOT / "recipes" / "tiny-test.yaml")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8").rstrip("\n")


# folder -> (arguments for one file, expected exit code, what the message must name)
TARGETS = {
    "config": (lambda p: ["train", str(p), "--dry-run"], 2, lambda p: p.name),
    "grader": (lambda p: ["grade", str(p), "--item", "{}", "--sample", "x"], 2, lambda p: p.name),
    "set": (lambda p: ["train", RECIPE, "--dry-run", "--set", _text(p)], 2, lambda p: "--set"),
    "item": (lambda p: ["grade", GRADER, "--item", _text(p), "--sample", "x"], 2, lambda p: "--item"),
    "grade_data": (lambda p: ["grade", GRADER, "--data", str(p), "--samples", str(p)], 1, lambda p: p.name),
}
CASES = sorted((folder, path) for folder in TARGETS for path in (CORPUS / folder).iterdir() if path.name != ".gitkeep")
# grade_sample/: {"grader", "item", "sample", "reward"} that once made a grader raise, hang or
# score wrong; `rft grade --data --samples` must now exit 0 with that reward.
GRADE_SAMPLES = sorted((CORPUS / "grade_sample").glob("*.json"))


def test_every_corpus_folder_has_a_target():
    folders = {p.name for p in CORPUS.iterdir() if p.is_dir()}
    assert folders == {*TARGETS, "grade_sample"}, folders ^ {*TARGETS, "grade_sample"}
    assert all(any((CORPUS / folder).iterdir()) for folder in (*TARGETS, "grade_sample"))


@pytest.mark.parametrize("folder,path", CASES, ids=[f"{f}/{p.name}" for f, p in CASES])
def test_corpus_input_gives_a_message_and_exit_code(folder, path):
    args, code, names = TARGETS[folder]
    result = CliRunner().invoke(app, args(path))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert "Error:" in result.output and names(path) in result.output, result.output


@pytest.mark.parametrize("path", GRADE_SAMPLES, ids=[p.stem for p in GRADE_SAMPLES])
def test_corpus_sample_is_graded(tmp_path, path):
    import json

    case = json.loads(path.read_text(encoding="utf-8"))
    (tmp_path / "grader.json").write_text(json.dumps(case["grader"]), encoding="utf-8")
    (tmp_path / "rows.jsonl").write_text(json.dumps(case["item"]) + "\n", encoding="utf-8")
    (tmp_path / "samples.jsonl").write_text(json.dumps({"output_text": case["sample"]}) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["grade", str(tmp_path / "grader.json"), "--data", str(tmp_path / "rows.jsonl"),
                                      "--samples", str(tmp_path / "samples.jsonl"), "--output", str(tmp_path / "out.jsonl")])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    graded = json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8"))
    assert graded["reward"] == case["reward"], graded
