"""Guarantee 6: configs are strict and never execute code. Unknown keys come with a suggestion,
wrong types and out-of-range values name the key path (run config, inline grader, grader file,
--set), and YAML is read with the safe loader only: a `!!python/...` tag is a config error and
nothing runs. (tests/test_config.py covers the run config's table of messages.)
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rft_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "tiny-test.yaml")
TRAIN = str(ROOT / "recipes" / "data" / "tiny-train.jsonl")


def rft(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def _evil(marker: Path) -> str:
    return f"!!python/object/apply:os.system ['touch {marker}']"


def test_python_tags_are_rejected_and_never_run(tmp_path):
    marker = tmp_path / "executed"
    grader = tmp_path / "grader.yaml"
    grader.write_text(f"type: string_check\nname: {_evil(marker)}\n", encoding="utf-8")
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {_evil(marker)}\n", encoding="utf-8")
    inline = tmp_path / "inline.yaml"
    inline.write_text(f"model: {{tiny: llama-test}}\ndata: {{train: {TRAIN}}}\ngrader: {_evil(marker)}\n", encoding="utf-8")
    outcomes = [
        rft("grade", grader, "--item", "{}", "--sample", "x"),
        rft("train", config, "--dry-run"),
        rft("train", inline, "--dry-run"),
        rft("train", RECIPE, "--dry-run", "--set", f"grader={_evil(marker)}"),  # a --set value that is no YAML stays a string
        rft("validate", TRAIN, "--grader", grader),
    ]
    for result in outcomes:
        assert result.exit_code == 2, result.output
    assert "could not determine a constructor for the tag" in outcomes[0].output
    assert "could not determine a constructor for the tag" in outcomes[1].output
    assert "grader file not found: !!python/object/apply" in outcomes[3].output
    assert not marker.exists()


def test_only_the_safe_yaml_loader_is_used_anywhere():
    """A static check: rft_cli calls yaml.safe_load and nothing that can build Python objects."""
    unsafe = {"load", "load_all", "full_load", "full_load_all", "unsafe_load", "unsafe_load_all", "Loader", "FullLoader",
              "UnsafeLoader", "add_constructor"}
    found = []
    for path in (ROOT / "rft_cli").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "yaml" and node.attr in unsafe:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} yaml.{node.attr}")
    assert not found, found


def test_models_are_never_loaded_with_remote_code():
    for path in (ROOT / "rft_cli").rglob("*.py"):
        assert "trust_remote_code=True" not in path.read_text(encoding="utf-8"), path


def test_inline_grader_errors_name_the_key_path_and_suggest(tmp_path):
    config = tmp_path / "run.yaml"
    spec = {"type": "string_check", "input": "{{ sample.output_text }}", "refrence": "{{ item.answer }}", "operation": "eq"}
    config.write_text(yaml.safe_dump({"model": {"tiny": "llama-test"}, "data": {"train": TRAIN}, "grader": spec}), encoding="utf-8")
    result = rft("train", config, "--dry-run")
    assert result.exit_code == 2
    assert "grader.refrence: unknown field (did you mean 'reference'?" in result.output


@pytest.mark.parametrize("text,expected", [
    ("type: string_check\ninput: x\nreference: y\noperation: eq\nnmae: z\n", "nmae: unknown field (did you mean 'name'?"),
    ("type: numeric\nreference: x\nabs_tol: -1\n", "abs_tol: Input should be greater than or equal to 0"),
    ("type: python\nsource: 'def grade(sample, item):\n  return 1'\ntimeout: forever\n", "timeout: Input should be a valid number"),
    ("type: multi\ngraders:\n  a: {type: string_check, input: x, reference: y, operation: eqq}\ncalculate_output: a\n",
     'graders.a.operation: "eqq" is not one of eq, ne, like, ilike'),
])
def test_grader_file_errors_name_the_field(tmp_path, text, expected):
    path = tmp_path / "grader.yaml"
    path.write_text(text, encoding="utf-8")
    result = rft("grade", path, "--item", "{}", "--sample", "x")
    assert result.exit_code == 2
    assert f"{path}: {expected}" in result.output


@pytest.mark.parametrize("override,expected", [
    ("rl.steps=true", "rl.steps: expected a number, not the boolean true"),
    ("rl.kl_coef=off", "rl.kl_coef: expected a number, not the boolean false"),
    ("sft.enabled=maybe", "sft.enabled: Input should be a valid boolean"),
    ("rl.top_p=1.5", "rl.top_p: Input should be less than or equal to 1"),
    ("model.lora.r=0", "model.lora.r: Input should be greater than or equal to 1"),
    ("eval.intervall=3", "eval.intervall: unknown key; did you mean 'eval.interval'?"),
])
def test_set_values_are_checked_like_the_file(override, expected):
    result = rft("train", RECIPE, "--dry-run", "--set", override)
    assert result.exit_code == 2
    assert expected in result.output


@pytest.mark.slow
def test_an_sft_max_length_that_fits_no_example_is_a_config_error(tmp_path):
    """Found by bench/train_50k_start.py: with every prompt longer than sft.max_length, TRL dropped
    every example and the run died in torch's sampler with "num_samples=0" and a traceback."""
    train = tmp_path / "train.jsonl"
    row = {"messages": [{"role": "user", "content": "What is one plus one, written as a number? " * 3}], "solution": "2", "answer": "2"}
    train.write_text((json.dumps(row) + "\n") * 10, encoding="utf-8")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"tiny": "llama-test"}, "data": {"train": str(train)},
                                      "grader": {"type": "string_check", "name": "x", "input": "{{ sample.output_text }}",
                                                 "reference": "{{ item.answer }}", "operation": "eq"},
                                      "sft": {"max_steps": 1, "max_length": 64}}), encoding="utf-8")
    result = rft("train", config, "--stage", "sft", "--quiet", "--output-dir", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "sft: none of the 10 demonstrations fits in sft.max_length=64" in result.output


@pytest.mark.parametrize("override,expected", [
    ("model.tiny={hidden_size: 0}", "model.tiny.hidden_size: must be at least 1, not 0"),
    ("model.tiny={foo: 1}", "model.tiny.foo: unknown size"),
    ("model.tiny={hidden_size: 10, num_attention_heads: 3}", "must be a multiple of 2 * model.tiny.num_attention_heads"),
    ("model.tiny={num_attention_heads: 2, num_key_value_heads: 3}", "multiple of model.tiny.num_key_value_heads"),
    ("sft.epochs=1e308", "sft.epochs: Input should be less than or equal to 10000"),
    ("seed=99999999999999999999999", "seed: Input should be less than 4294967296"),
])
def test_values_that_once_crashed_later_are_config_errors(override, expected):
    """Each once passed the config check and died later with a traceback: a tiny model of width 0
    (ZeroDivisionError while building it), an overflowing epoch count (OverflowError in the plan),
    a seed torch cannot take (ValueError at the first step)."""
    result = rft("train", RECIPE, "--dry-run", "--set", override)
    assert result.exit_code == 2, result.output
    assert expected in result.output
