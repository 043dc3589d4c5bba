"""The run config is strict: unknown keys (with a suggestion), types, ranges and files are errors with a key path."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rft_cli.cli import app
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


@pytest.mark.parametrize("data,expected", [
    # Found by the fuzzer below: a key holding a newline broke the one-line message.
    ({"model": {"\n": None}}, 'model."\\n": unknown key'),
])
def test_fuzz_corpus(tmp_path, data, expected):
    with pytest.raises(ConfigError) as info:
        load_run_config(write_config(tmp_path, data))
    assert expected in str(info.value) and "\n" not in str(info.value)


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


def _yaml_values():
    from hypothesis import strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                        max_leaves=12)


def test_fuzzed_configs_raise_config_error_or_load(tmp_path_factory):
    """Any YAML mapping, including real keys with garbage values, gives a RunConfig or a ConfigError."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    keys = st.sampled_from(["model", "data", "grader", "sft", "rl", "eval", "seed", "output_dir", "report_to", "x"])
    folder = tmp_path_factory.mktemp("fuzz")

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.dictionaries(keys, _yaml_values(), max_size=6), st.lists(st.text(max_size=15), max_size=2))
    def check(data, overrides):
        path = folder / "fuzz.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        try:
            load_run_config(path, overrides)
        except ConfigError as exc:
            assert str(exc) and "\n" not in str(exc).strip()

    check()


def test_fuzzed_bytes_as_config_file(tmp_path_factory):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    folder = tmp_path_factory.mktemp("bytes")

    @settings(max_examples=80, deadline=None)
    @given(st.binary(max_size=200))
    def check(raw):
        path = folder / "raw.yaml"
        path.write_bytes(raw)
        try:
            load_run_config(path)
        except ConfigError:
            pass

    check()


def test_a_missing_local_model_folder_fails_before_training(tmp_path):
    from typer.testing import CliRunner

    from rft_cli.cli import app

    result = CliRunner().invoke(app, ["train", str(RECIPE), "--set", "model={name: ./no/such/model}", "--dry-run"])
    assert result.exit_code == 2
    assert "model.name: ./no/such/model: no such model folder" in result.output


# -- Guarantee 6: configs are strict and never execute code ------------------------------------------
# Guarantee 6: configs are strict and never execute code. Unknown keys come with a suggestion,
# wrong types and out-of-range values name the key path (run config, inline grader, grader file,
# --set), and YAML is read with the safe loader only: a `!!python/...` tag is a config error and
# nothing runs. (tests/test_config.py covers the run config's table of messages.)


ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "recipes" / "data" / "tiny-train.jsonl")


def rft(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def _evil(marker: Path) -> str:
    return f"!!python/object/apply:os.system ['touch {marker}']"


@pytest.mark.guarantee
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


@pytest.mark.guarantee
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


@pytest.mark.guarantee
def test_models_are_never_loaded_with_remote_code():
    for path in (ROOT / "rft_cli").rglob("*.py"):
        assert "trust_remote_code=True" not in path.read_text(encoding="utf-8"), path


@pytest.mark.guarantee
def test_inline_grader_errors_name_the_key_path_and_suggest(tmp_path):
    config = tmp_path / "run.yaml"
    spec = {"type": "string_check", "input": "{{ sample.output_text }}", "refrence": "{{ item.answer }}", "operation": "eq"}
    config.write_text(yaml.safe_dump({"model": {"tiny": "llama-test"}, "data": {"train": TRAIN}, "grader": spec}), encoding="utf-8")
    result = rft("train", config, "--dry-run")
    assert result.exit_code == 2
    assert "grader.refrence: unknown field (did you mean 'reference'?" in result.output


@pytest.mark.guarantee
@pytest.mark.parametrize("text,expected", [
    ("type: string_check\ninput: x\nreference: y\noperation: eq\nnmae: z\n", "nmae: unknown field (did you mean 'name'?"),
    ("type: numeric\nreference: x\nabs_tol: -1\n", "abs_tol: Input should be greater than or equal to 0"),
    ("type: python\nsource: 'def grade(sample, item):\n  return 1'\ntimeout: forever\n", "timeout: Input should be a valid number"),
    ("type: multi\ngraders:\n  a: {type: string_check, input: x, reference: y, operation: eqq}\ncalculate_output: a\n",
     'graders.a.operation: "eqq" is not one of eq, ne, like, ilike'),
])
@pytest.mark.guarantee
def test_grader_file_errors_name_the_field(tmp_path, text, expected):
    path = tmp_path / "grader.yaml"
    path.write_text(text, encoding="utf-8")
    result = rft("grade", path, "--item", "{}", "--sample", "x")
    assert result.exit_code == 2
    assert f"{path}: {expected}" in result.output


@pytest.mark.guarantee
@pytest.mark.parametrize("override,expected", [
    ("rl.steps=true", "rl.steps: expected a number, not the boolean true"),
    ("rl.kl_coef=off", "rl.kl_coef: expected a number, not the boolean false"),
    ("sft.enabled=maybe", "sft.enabled: Input should be a valid boolean"),
    ("rl.top_p=1.5", "rl.top_p: Input should be less than or equal to 1"),
    ("model.lora.r=0", "model.lora.r: Input should be greater than or equal to 1"),
    ("eval.intervall=3", "eval.intervall: unknown key; did you mean 'eval.interval'?"),
])
@pytest.mark.guarantee
def test_set_values_are_checked_like_the_file(override, expected):
    result = rft("train", RECIPE, "--dry-run", "--set", override)
    assert result.exit_code == 2
    assert expected in result.output


@pytest.mark.guarantee
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


@pytest.mark.guarantee
@pytest.mark.parametrize("override,expected", [
    ("model.tiny={hidden_size: 0}", "model.tiny.hidden_size: must be at least 1, not 0"),
    ("model.tiny={foo: 1}", "model.tiny.foo: unknown size"),
    ("model.tiny={hidden_size: 10, num_attention_heads: 3}", "must be a multiple of 2 * model.tiny.num_attention_heads"),
    ("model.tiny={num_attention_heads: 2, num_key_value_heads: 3}", "multiple of model.tiny.num_key_value_heads"),
    ("sft.epochs=1e308", "sft.epochs: Input should be less than or equal to 10000"),
    ("seed=99999999999999999999999", "seed: Input should be less than 4294967296"),
])
@pytest.mark.guarantee
def test_values_that_once_crashed_later_are_config_errors(override, expected):
    """Each once passed the config check and died later with a traceback: a tiny model of width 0
    (ZeroDivisionError while building it), an overflowing epoch count (OverflowError in the plan),
    a seed torch cannot take (ValueError at the first step)."""
    result = rft("train", RECIPE, "--dry-run", "--set", override)
    assert result.exit_code == 2, result.output
    assert expected in result.output
