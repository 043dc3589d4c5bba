"""`rft import openai`: an OpenAI RFT job body becomes a recipe `rft train` runs, its grader beside it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.config import EvalSettings, RLSettings, load_run_config
from rft_cli.graders import load_grader
from rft_cli.openai_import import MAPPING

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "tests" / "data" / "openai_job.json"
JOB_AUTO = ROOT / "tests" / "data" / "openai_job_auto.json"
TRAIN = ROOT / "data" / "example" / "train.jsonl"
VALID = ROOT / "data" / "example" / "valid.jsonl"


def _import(
    job: Path, out: Path, *extra: str, files: bool = True, model: str = "Qwen/Qwen2.5-0.5B-Instruct"
):
    args = [
        "import",
        "openai",
        str(job),
        "--model",
        model,
        "-o",
        str(out),
        "--format",
        "json",
        *extra,
    ]
    if files:
        args += ["--training-file", str(TRAIN), "--validation-file", str(VALID)]
    return CliRunner().invoke(app, args)


def _edited_job(tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    job = json.loads(JOB.read_text())
    edit(job)
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    return path


def test_every_hyperparameter_is_carried_across(tmp_path):
    result = _import(JOB, tmp_path / "recipe.yaml")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    config = load_run_config(report["recipe"])
    rows = sum(1 for line in TRAIN.read_text().splitlines() if line.strip())
    assert config.rl.prompts_per_step == 6 and config.rl.steps == math.ceil(rows * 2 / 6)
    assert (6 * config.rl.samples_per_prompt) % config.rl.mini_batch_size == 0
    assert config.rl.learning_rate == pytest.approx(
        RLSettings.model_fields["learning_rate"].default * 2.0
    )
    assert (config.eval.interval, config.eval.samples) == (5, 8)
    assert config.seed == 7 and str(config.output_dir) == "runs/arith-words"
    assert config.model.name == "Qwen/Qwen2.5-0.5B-Instruct" and config.sft.enabled is False
    assert Path(config.data.train) == TRAIN and Path(config.data.valid) == VALID
    assert [row["openai"] for row in report["mapping"]] == list(MAPPING)


def test_the_grader_is_written_unchanged_and_grades(tmp_path):
    """The multi grader (string_check + python, as in OpenAI's RFT guide) loads with rft's own loader."""
    result = _import(JOB, tmp_path / "recipe.yaml")
    assert result.exit_code == 0, result.output
    written = Path(json.loads(result.stdout)["grader"])
    assert written == tmp_path / "recipe.grader.json"
    assert (
        json.loads(written.read_text())
        == json.loads(JOB.read_text())["method"]["reinforcement"]["grader"]
    )
    grader = load_grader(written)
    try:
        item = {"reference_answer": "336"}
        assert grader.grade("12 * 28 = 336.\n#### 336", item).reward == 1.0
        assert (
            grader.grade("It is 336, I think.\n#### 337", item).reward == 0.5
        )  # contains, but the final answer is wrong
    finally:
        grader.close()


def test_the_recipe_carries_the_mapping_as_a_comment(tmp_path):
    assert _import(JOB, tmp_path / "recipe.yaml").exit_code == 0
    header = [
        line for line in (tmp_path / "recipe.yaml").read_text().splitlines() if line.startswith("#")
    ]
    text = "\n".join(header)
    for name, (key, _) in MAPPING.items():
        assert any(name in line and key in line for line in header), name
    assert "sft.enabled is false" in text and "o4-mini-2025-04-16" in text


def test_auto_keeps_rfts_defaults(tmp_path):
    """Every hyperparameter "auto" (and no validation file): the recipe has rft's defaults, nothing is reported."""
    result = _import(JOB_AUTO, tmp_path / "recipe.yaml", "--training-file", str(TRAIN), files=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    config = load_run_config(report["recipe"])
    assert config.rl == RLSettings() and config.eval == EvalSettings() and config.data.valid is None
    assert (
        report["unsupported"] == [] and report["unknown"] == [] and "Warning" not in result.stderr
    )


def test_fields_with_no_local_meaning_are_reported(tmp_path):
    result = _import(JOB, tmp_path / "recipe.yaml")
    report = json.loads(result.stdout)
    assert [u.split(":")[0] for u in report["unsupported"]] == [
        "method.reinforcement.hyperparameters.reasoning_effort"
    ]
    assert (
        "reasoning_effort" in result.stderr and "compute_multiplier" not in result.stderr
    )  # "auto" loses nothing


def test_unknown_and_unsupported_fields_are_reported_never_dropped(tmp_path):
    def edit(job):
        job["integrations"] = [{"type": "wandb", "wandb": {"project": "rft"}}]
        job["surprise"] = 1
        job["method"]["reinforcement"]["response_format"] = {"type": "json_schema"}
        job["method"]["reinforcement"]["hyperparameters"]["beta"] = 0.1

    result = _import(_edited_job(tmp_path, edit), tmp_path / "recipe.yaml")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    unknown = [
        "surprise",
        "method.reinforcement.response_format",
        "method.reinforcement.hyperparameters.beta",
    ]
    assert sorted(report["unknown"]) == sorted(unknown)
    assert any(u.startswith("integrations:") for u in report["unsupported"])
    recipe = (tmp_path / "recipe.yaml").read_text()
    for name in [*unknown, "integrations"]:
        assert name in result.stderr and name in recipe


def test_job_object_status_fields_are_listed_not_read(tmp_path):
    """The job object GET /fine_tuning/jobs/{id} returns (id, status, ...) imports too."""

    def edit(job):
        job.update(
            id="ftjob-abc", object="fine_tuning.job", status="succeeded", fine_tuned_model=None
        )

    report = json.loads(_import(_edited_job(tmp_path, edit), tmp_path / "recipe.yaml").stdout)
    assert (
        sorted(report["ignored"]) == ["fine_tuned_model", "id", "object", "status"]
        and report["unknown"] == []
    )


@pytest.mark.parametrize(
    "flags,expected",
    [
        ([], "file-TrainAbc123 is an OpenAI file id"),
        (["--training-file", str(TRAIN)], "pass the JSONL you uploaded with --validation-file"),
        (
            ["--training-file", "missing.jsonl", "--validation-file", str(VALID)],
            "missing.jsonl: file not found",
        ),
    ],
)
def test_data_files_must_be_given_as_local_files(tmp_path, flags, expected):
    result = _import(JOB, tmp_path / "recipe.yaml", *flags, files=False)
    assert result.exit_code == 2 and expected in result.output
    assert not (tmp_path / "recipe.yaml").exists()


@pytest.mark.parametrize(
    "edit,expected",
    [
        (
            lambda j: j["method"].update(type="supervised"),
            'method.type "supervised"; only reinforcement jobs import',
        ),
        (
            lambda j: j["method"]["reinforcement"].pop("grader"),
            "method.reinforcement.grader: missing",
        ),
        (
            lambda j: j["method"]["reinforcement"]["hyperparameters"].update(batch_size=0),
            "hyperparameters.batch_size: expected a positive integer",
        ),
        (
            lambda j: j["method"]["reinforcement"]["hyperparameters"].update(n_epochs=1.5),
            "hyperparameters.n_epochs: expected a positive integer",
        ),
        (
            lambda j: j["method"]["reinforcement"]["hyperparameters"].update(
                learning_rate_multiplier="big"
            ),
            "learning_rate_multiplier: expected a positive number",
        ),
        (
            lambda j: j["method"]["reinforcement"]["hyperparameters"].update(eval_samples=[4]),
            "eval_samples: expected a positive integer",
        ),
        (
            lambda j: j["method"]["reinforcement"]["hyperparameters"].update(
                learning_rate_multiplier=1e7
            ),
            "makes rl.learning_rate 3 (at least 1)",
        ),
        (
            lambda j: j["method"].update(
                reinforcement={"grader": {"type": "multi", "graders": [], "calculate_output": "1"}}
            ),
            "write a named map",
        ),
        (
            lambda j: j["method"]["reinforcement"]["grader"]["graders"]["contains"].pop(
                "operation"
            ),
            "method.reinforcement.grader: graders.contains.operation",
        ),
        (lambda j: j.update(seed=-1), "seed: expected an integer from 0 to 4294967295, not -1"),
    ],
)
def test_bad_jobs_are_config_errors(tmp_path, edit, expected):
    result = _import(_edited_job(tmp_path, edit), tmp_path / "recipe.yaml")
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert (
        not (tmp_path / "recipe.yaml").exists() and not (tmp_path / "recipe.grader.json").exists()
    )


def test_model_is_required():
    result = CliRunner().invoke(
        app, ["import", "openai", str(JOB), "-o", "x.yaml", "--training-file", str(TRAIN)]
    )
    assert result.exit_code == 2 and "--model" in result.output


def test_existing_files_are_kept_unless_forced(tmp_path):
    (tmp_path / "recipe.yaml").write_text("keep me\n")
    result = _import(JOB, tmp_path / "recipe.yaml")
    assert result.exit_code == 2 and "pass --force" in result.output
    assert (tmp_path / "recipe.yaml").read_text() == "keep me\n"
    assert _import(JOB, tmp_path / "recipe.yaml", "--force").exit_code == 0


def test_text_output_is_the_mapping_table(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "import",
            "openai",
            str(JOB),
            "--model",
            "m",
            "-o",
            str(tmp_path / "r.yaml"),
            "--training-file",
            str(TRAIN),
            "--validation-file",
            str(VALID),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "rl.prompts_per_step" in result.stdout and "rft train" in result.stdout


@pytest.mark.slow
def test_the_imported_recipe_trains(tiny_model_dir, tmp_path):
    """Import, then `rft train` the recipe as written (a local tiny model, 2 RL steps, the python grader in its sandbox)."""
    assert _import(JOB, tmp_path / "recipe.yaml", model=tiny_model_dir).exit_code == 0
    out = tmp_path / "run"
    args = ["train", str(tmp_path / "recipe.yaml"), "--output-dir", str(out), "--quiet"]
    for override in (
        "rl.steps=2",
        "rl.max_new_tokens=8",
        "rl.max_prompt_length=96",
        "eval.samples=4",
        "eval.interval=1",
        "eval.batch_size=4",
        "save_interval=1",
        "model.dtype=float32",
    ):
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stages"]) == {"rl"} and summary["stages"]["rl"]["steps"] == 2
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rl = [m for m in metrics if m.get("stage") == "rl" and "train_reward_mean" in m]
    assert len(rl) == 2 and all(
        m["grader_error_share"] == 0 and "sub_rewards/final" in m for m in rl
    )


# --- Agent RFT: tools the model calls during rollouts -------------------------------------------

AGENT_TOOLS = [
    {
        "name": "search",
        "server_url": "https://tools.example.com/api/tools",
        "headers": {"X-Functions-Key": "k-123-never-written", "X-Tenant": "acme"},
    },
    {
        "name": "get_by_id",
        "server_url": "https://tools.example.com/api/tools",
        "headers": {"Authorization": "Bearer sk-never-written"},
    },
]


def _agent_job(job):
    job["method"]["reinforcement"].update(tools=AGENT_TOOLS, max_episode_steps=6)


def test_an_agent_rft_job_s_tools_and_episode_steps_are_carried_across(tmp_path):
    out = tmp_path / "recipe.yaml"
    result = _import(_edited_job(tmp_path, _agent_job), out)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["unknown"] == [] and report["tools"] == 2
    assert report["secrets"] == [
        "RFT_TOOL_SEARCH_X_FUNCTIONS_KEY",
        "RFT_TOOL_GET_BY_ID_AUTHORIZATION",
    ]
    assert (
        "export RFT_TOOL_SEARCH_X_FUNCTIONS_KEY, RFT_TOOL_GET_BY_ID_AUTHORIZATION" in result.stderr
    )
    text = out.read_text()
    assert "never-written" not in text  # a secret is never written to the recipe
    config = load_run_config(out)
    assert [(t.name, t.server_url, t.headers) for t in config.tools] == [
        (
            "search",
            AGENT_TOOLS[0]["server_url"],
            {"X-Functions-Key": "${RFT_TOOL_SEARCH_X_FUNCTIONS_KEY}", "X-Tenant": "acme"},
        ),
        (
            "get_by_id",
            AGENT_TOOLS[1]["server_url"],
            {"Authorization": "Bearer ${RFT_TOOL_GET_BY_ID_AUTHORIZATION}"},
        ),
    ]
    assert config.episode.max_episode_steps == 6
    assert (
        "rft eval --tools <this recipe>" in text
        and "`rft train` trains over whole episodes" in text
    )


@pytest.mark.parametrize(
    "tools,expected",
    [
        ("not a list", "method.reinforcement.tools: expected a list"),
        ([{"name": "x"}], 'method.reinforcement.tools[0]: a tool needs "name" and "server_url"'),
        (
            [{"name": "x", "server_url": "ftp://a"}],
            "tools.0: server_url 'ftp://a': the scheme is ftp",
        ),
    ],
)
def test_bad_agent_tools_are_config_errors(tmp_path, tools, expected):
    result = _import(
        _edited_job(tmp_path, lambda job: job["method"]["reinforcement"].update(tools=tools)),
        tmp_path / "r.yaml",
    )
    assert result.exit_code == 2, result.output
    assert expected in result.output
