"""`rft config schema`: the JSON Schema editors read agrees with what `rft train` and `rft grade` accept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.config import RunConfig

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the dev extra; pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
GRADER_FILES = sorted([*(ROOT / "data").glob("*/grader.yaml"), *(ROOT / "examples/graders").glob("*.yaml"),
                       *(ROOT / "tests/data/graders/openai").iterdir()])


def _schema(*args: str) -> dict:
    result = CliRunner().invoke(app, ["config", "schema", *args])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    jsonschema.Draft7Validator.check_schema(schema)  # the draft the YAML language server reads
    return schema


@pytest.fixture(scope="module")
def run_validator():
    return jsonschema.Draft7Validator(_schema())


@pytest.fixture(scope="module")
def grader_validator():
    return jsonschema.Draft7Validator(_schema("--grader"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.name for p in RECIPES])
def test_every_shipped_recipe_validates(recipe, run_validator):
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in run_validator.iter_errors(yaml.safe_load(recipe.read_text()))]
    assert not errors, errors


@pytest.mark.parametrize("path", GRADER_FILES, ids=[f"{p.parent.name}/{p.name}" for p in GRADER_FILES])
def test_every_shipped_grader_file_validates(path, grader_validator):
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in grader_validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert not errors, errors


@pytest.mark.parametrize("change,where", [
    ({"rl": {"kl_coeff": 0.1}}, ["rl"]),                                   # a misspelt key
    ({"rl": {"steps": 0}}, ["rl", "steps"]),                               # out of range
    ({"rl": {"algorithm": "dpo"}}, ["rl", "algorithm"]),                   # not an allowed value
    ({"sft": {"enabled": "yes please"}}, ["sft", "enabled"]),              # wrong type
    ({"grader": {"type": "string_check", "input": "x", "reference": "y", "operation": "equal"}}, ["grader"]),
])
def test_mistakes_are_marked_where_they_are(change, where, run_validator):
    recipe = yaml.safe_load((ROOT / "recipes/tiny-test.yaml").read_text())
    for key, value in change.items():
        recipe[key] = {**recipe[key], **value} if isinstance(recipe.get(key), dict) and key != "grader" else value
    assert [list(e.absolute_path) for e in run_validator.iter_errors(recipe)] == [where]


def test_a_multi_graders_sub_graders_are_checked_as_graders(grader_validator):
    multi = {"type": "multi", "calculate_output": "a", "graders": {"a": {"type": "string_check", "input": "x"}}}
    assert list(grader_validator.iter_errors(multi))


def test_every_field_has_its_description_in_the_schema():
    """The schema carries the same descriptions as the config reference (hover text in an editor)."""
    schema = _schema()
    for name, field in RunConfig.model_fields.items():
        assert schema["properties"][name]["description"] == field.description
    rl = schema["$defs"]["RLSettings"]["properties"]
    assert rl["kl_coef"]["description"] and rl["kl_coef"]["default"] == 0.05


def test_schema_written_to_a_file(tmp_path):
    out = tmp_path / "rft.schema.json"
    result = CliRunner().invoke(app, ["config", "schema", "--grader", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["title"] == "rft grader file"


def test_unwritable_output_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["config", "schema", "-o", str(tmp_path / "missing" / "s.json")])
    assert result.exit_code == 2
    assert "cannot write" in result.output and "Traceback" not in result.output
