"""The run config is strict: unknown keys (with a suggestion), types, ranges and files are errors with a key path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rft_cli.config import load_run_config, parse_run_config
from rft_cli.errors import ConfigError

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"


def write_config(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def base(tmp_path) -> dict:
    train = tmp_path / "train.jsonl"
    train.write_text('{"messages": [{"role": "user", "content": "1+1="}], "answer": "2"}\n', encoding="utf-8")
    return {"model": {"tiny": "llama-test"}, "data": {"train": str(train)},
            "grader": {"type": "string_check", "name": "x", "input": "{{ sample.output_text }}",
                       "reference": "{{ item.answer }}", "operation": "eq"}}


def test_the_tiny_recipe_loads_with_reft_defaults():
    config = load_run_config(RECIPE)
    assert config.model.tiny == "llama-test"
    assert config.rl.gamma == 1.0 and config.rl.lam == 0.95 and config.rl.clip_range == 0.2
    assert config.data.train.is_file()  # relative paths resolve next to the recipe


def test_defaults_follow_reft(base):
    config = parse_run_config(base)
    assert (config.rl.kl_coef, config.rl.vf_coef, config.rl.ppo_epochs, config.rl.learning_rate) == (0.05, 5.0, 2, 3e-7)
    assert (config.sft.learning_rate, config.sft.epochs, config.seed) == (1e-5, 2.0, 42)


@pytest.mark.parametrize("patch,expected", [
    ({"rl": {"kl_coeff": 0.1}}, "rl.kl_coeff: unknown key; did you mean 'rl.kl_coef'?"),
    ({"sedd": 1}, "sedd: unknown key; did you mean 'seed'?"),
    ({"model": {"tiny": "llama-test", "dtyp": "float32"}}, "model.dtyp: unknown key; did you mean 'model.dtype'?"),
    ({"rl": {"kl_coef": -1}}, "rl.kl_coef: Input should be greater than or equal to 0"),
    ({"rl": {"steps": "many"}}, "rl.steps: Input should be a valid integer"),
    ({"rl": {"algorithm": "dpo"}}, "rl.algorithm: Input should be 'ppo', 'grpo' or 'rloo'"),
    ({"model": {"tiny": "llama-huge"}}, "unknown tiny architecture 'llama-huge'"),
    ({"model": {"tiny": "llama-test", "name": "gpt2"}}, "give exactly one of model.name"),
    ({"data": {"train": "missing.jsonl"}}, "data.train: file not found: missing.jsonl"),
    ({"grader": "nope.yaml"}, "grader: grader file not found: nope.yaml"),
    ({"rl": {"prompts_per_step": 3, "mini_batch_size": 2}}, "must be a multiple of rl.mini_batch_size"),
    ({"rl": {"algorithm": "grpo", "samples_per_prompt": 1}}, "rl.samples_per_prompt must be at least 2 for grpo"),
])
def test_bad_values_name_the_key_path(base, patch, expected):
    for key, value in patch.items():
        merge = isinstance(base.get(key), dict) and isinstance(value, dict) and key != "model"
        base[key] = {**base[key], **value} if merge else value
    with pytest.raises(ConfigError) as info:
        parse_run_config(base, source="run.yaml")
    assert expected in str(info.value)
    assert info.value.exit_code == 2


def test_set_overrides_are_yaml_typed(base, tmp_path):
    path = write_config(tmp_path, base)
    config = load_run_config(path, ["rl.kl_coef=0.1", "rl.adaptive_kl=true", "sft.enabled=false", "eval.interval=3"])
    assert config.rl.kl_coef == 0.1 and config.rl.adaptive_kl is True and config.sft.enabled is False
    assert config.eval.interval == 3


@pytest.mark.parametrize("override,expected", [
    ("rl.kl_coef", "write it as key=value"),
    ("rl.klcoef=0.1", "rl.klcoef: unknown key; did you mean 'rl.kl_coef'?"),
    ("data.train.x=1", "train is not a mapping"),
])
def test_bad_overrides(base, tmp_path, override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_run_config(write_config(tmp_path, base), [override])


@pytest.mark.parametrize("text,expected", [
    ("model: [unclosed\n", "line 2"),
    ("- a list\n", "must be a YAML mapping"),
    ("!!python/object/apply:os.system ['echo hi']\n", "could not determine a constructor"),
])
def test_unreadable_yaml_is_a_config_error(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=expected):
        load_run_config(path)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="file not found"):
        load_run_config("no/such/run.yaml")


def test_cli_reports_config_errors_with_exit_code_2(base, tmp_path):
    from typer.testing import CliRunner

    from rft_cli.cli import app

    base["rl"] = {"kl_coeff": 0.1}
    result = CliRunner().invoke(app, ["train", str(write_config(tmp_path, base)), "--dry-run"])
    assert result.exit_code == 2
    assert "did you mean 'rl.kl_coef'" in result.output
    assert "Traceback" not in result.output
