"""Turn an OpenAI reinforcement fine-tuning job into an rft recipe (`rft import openai`).

The input is the body of `POST /v1/fine_tuning/jobs` (or the job object the API returns for it):
`model`, `training_file`, `validation_file`, `seed`, `suffix` and `method: {type: reinforcement,
reinforcement: {grader, hyperparameters}}`. The grader is written beside the recipe unchanged; each
hyperparameter becomes the rft key of the table in `MAPPING` (docs/openai.md, "Coming from OpenAI RFT").
Fields with no local meaning are reported, never dropped silently.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rft_cli import files
from rft_cli.config import EvalSettings, RLSettings, load_run_config
from rft_cli.errors import ConfigError
from rft_cli.graders import build_grader

if TYPE_CHECKING:
    from pydantic import BaseModel

# OpenAI hyperparameter -> (rft key, how it is carried across). One table feeds the recipe's
# comment block, `--format json` and the docs/openai.md table, so the three cannot drift apart.
MAPPING: dict[str, tuple[str, str]] = {
    "n_epochs": (
        "rl.steps",
        "ceil(training rows * n_epochs / prompts_per_step): one epoch = every training prompt sampled once",
    ),
    "batch_size": (
        "rl.prompts_per_step",
        "prompts per RL step (rl.mini_batch_size is lowered to divide it when needed)",
    ),
    "learning_rate_multiplier": (
        "rl.learning_rate",
        "rft's base rl.learning_rate (ReFT's) times the multiplier; OpenAI's base rate is not published",
    ),
    "eval_interval": ("eval.interval", "RL steps between evaluations on data.valid"),
    "eval_samples": (
        "eval.samples",
        "answers generated per evaluation: rft grades one greedy answer for each of the first N validation rows",
    ),
    "compute_multiplier": (
        "(none)",
        "no local meaning: OpenAI's search-compute budget; rl.samples_per_prompt is the nearest knob",
    ),
    "reasoning_effort": (
        "(none)",
        "no local meaning: open models have no effort setting; put an instruction in the system message instead",
    ),
}
_NO_EFFECT = {
    "auto",
    "default",
}  # values that ask for the platform's default: nothing to carry across

_JOB_KEYS = {"model", "training_file", "validation_file", "seed", "suffix", "method"}
# Fields of the job object that GET /fine_tuning/jobs/{id} returns: status, not settings.
_JOB_STATUS_KEYS = {
    "id",
    "object",
    "created_at",
    "finished_at",
    "status",
    "fine_tuned_model",
    "organization_id",
    "result_files",
    "trained_tokens",
    "error",
    "estimated_finish",
    "user_provided_suffix",
}
# Accepted by the API but with no local meaning: reported as unsupported when they hold a value.
_JOB_UNSUPPORTED = {
    "integrations": "use report_to: wandb (or tensorboard, trackio) in the recipe",
    "metadata": "no local meaning",
    "hyperparameters": "top-level hyperparameters are the deprecated supervised form; "
    "method.reinforcement.hyperparameters is read",
}


@dataclass
class ImportReport:
    """What `import_openai_job` wrote and what it could not carry across."""

    recipe: Path
    grader: Path
    mapping: list[dict[str, Any]] = field(
        default_factory=list
    )  # {openai, value, rft, rft_value, note}
    unsupported: list[str] = field(default_factory=list)  # "field: value (why)"; a warning each
    unknown: list[str] = field(default_factory=list)  # field paths the job schema does not have
    ignored: list[str] = field(default_factory=list)  # job-object status fields (id, status, ...)
    secrets: list[str] = field(default_factory=list)  # variables the tools' headers read
    tools: int = 0  # Agent RFT tools carried across (the recipe runs with `rft eval --tools`)

    def as_dict(self) -> dict[str, Any]:
        return {
            "recipe": str(self.recipe),
            "grader": str(self.grader),
            "mapping": self.mapping,
            "unsupported": self.unsupported,
            "unknown": self.unknown,
            "ignored": self.ignored,
            "secrets": self.secrets,
            "tools": self.tools,
        }


def read_job(path: str | Path) -> dict[str, Any]:
    """The job body in `path` (JSON); raises ConfigError naming the file."""
    path = Path(path)
    job = files.read_json(
        path, "the job file", hint="give the JSON body of an OpenAI fine-tuning job"
    )
    if not isinstance(job, dict):
        raise ConfigError(
            f"{path}: holds a {type(job).__name__}, not a job object (write the JSON body of POST /v1/fine_tuning/jobs)"
        )
    return job


def _reinforcement(job: dict[str, Any], source: str) -> dict[str, Any]:
    """`method.reinforcement`, or a ConfigError when the job is not a reinforcement job."""
    method = job.get("method")
    if not isinstance(method, dict):
        method = {}
    kind = method.get("type")
    if kind != "reinforcement":
        found = f"method.type {json.dumps(kind)}" if kind is not None else "no method"
        raise ConfigError(
            f"{source}: {found}; only reinforcement jobs import "
            '(the body needs "method": {"type": "reinforcement", "reinforcement": {"grader": ...}})'
        )
    section = method.get("reinforcement")
    if not isinstance(section, dict) or not isinstance(section.get("grader"), dict):
        raise ConfigError(
            f"{source}: method.reinforcement.grader: missing; the job needs its grader object"
        )
    return section


def _check_fields(job: dict[str, Any], section: dict[str, Any], report: ImportReport) -> None:
    """Sort every field that is not carried across into unknown, unsupported or ignored."""
    for key, value in job.items():
        if key in _JOB_STATUS_KEYS:
            report.ignored.append(key)
        elif key in _JOB_UNSUPPORTED:
            if value not in (None, [], {}):
                report.unsupported.append(f"{key}: {json.dumps(value)} ({_JOB_UNSUPPORTED[key]})")
        elif key not in _JOB_KEYS:
            report.unknown.append(key)
    method = job["method"]
    report.unknown += [f"method.{k}" for k in method if k not in ("type", "reinforcement")]
    report.unknown += [f"method.reinforcement.{k}" for k in section if k not in _REINFORCEMENT_KEYS]


# Agent RFT (tools the model calls during rollouts) adds `tools` and `max_episode_steps`.
_REINFORCEMENT_KEYS = ("grader", "hyperparameters", "tools", "max_episode_steps")
_TOOL_KEYS = ("name", "server_url", "headers")
_SECRET_HEADER = re.compile(r"auth|key|token|secret|password|cookie|session", re.IGNORECASE)


def _agent_sections(section: dict[str, Any], source: str, report: ImportReport) -> dict[str, Any]:
    """The recipe's `tools` and `episode` from an Agent RFT job's `tools` and `max_episode_steps`.

    A header whose name looks secret (auth, key, token...) is never written: the recipe reads it
    from an environment variable (`Bearer ${RFT_TOOL_SEARCH_AUTHORIZATION}`), which the report
    lists for the user to export."""
    tools = section.get("tools")
    steps = section.get("max_episode_steps")
    out: dict[str, Any] = {}
    if tools is not None:
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise ConfigError(
                f'{source}: method.reinforcement.tools: expected a list of {{"name", "server_url", "headers"}} objects'
            )
        out["tools"] = [_tool(t, i, source, report) for i, t in enumerate(tools)]
        report.tools = len(out["tools"])
    if steps is not None:
        out["episode"] = {
            "max_episode_steps": _positive(
                steps, "max_episode_steps", source, True, "method.reinforcement"
            )
        }
    return out


def _tool(tool: dict[str, Any], index: int, source: str, report: ImportReport) -> dict[str, Any]:
    where = f"method.reinforcement.tools[{index}]"
    report.unknown += [f"{where}.{k}" for k in tool if k not in _TOOL_KEYS]
    name, url = tool.get("name"), tool.get("server_url")
    if not isinstance(name, str) or not isinstance(url, str):
        raise ConfigError(f'{source}: {where}: a tool needs "name" and "server_url" (strings)')
    headers = tool.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"{source}: {where}.headers: expected an object of text values")
    out: dict[str, Any] = {"name": name, "server_url": url}
    if headers:
        out["headers"] = {k: _header(name, k, v, report) for k, v in headers.items()}
    return out


def _header(tool: str, header: str, value: str, report: ImportReport) -> str:
    """A header value for the recipe: a secret becomes a `${VARIABLE}` reference."""
    if "${" in value or not _SECRET_HEADER.search(header):
        return value
    variable = re.sub(r"[^A-Z0-9]+", "_", f"RFT_TOOL_{tool}_{header}".upper()).strip("_")
    report.secrets.append(variable)
    if value.lower().startswith("bearer "):
        return f"Bearer ${{{variable}}}"
    return f"${{{variable}}}"


def _positive(
    value: Any,
    name: str,
    source: str,
    integer: bool,
    section: str = "method.reinforcement.hyperparameters",
) -> int | float:
    """A hyperparameter value that must be a positive number (an integer where OpenAI wants one)."""
    kinds = (int,) if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or not value > 0
        or (not integer and not math.isfinite(value))
    ):
        expected = "a positive integer" if integer else "a positive number"
        raise ConfigError(
            f'{source}: {section}.{name}: expected {expected} or "auto", not {json.dumps(value)}'
        )
    return value


def count_rows(path: Path) -> int:
    """Non-blank lines of a JSONL file (the rows one epoch samples); `rft train` validates them."""
    from rft_cli.files import open_regular, split_lines

    try:
        with open_regular(path) as handle:
            return sum(
                1 for line in split_lines(handle) if not isinstance(line, bytes) or line.strip()
            )
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the training file ({exc.strerror or exc})"
        ) from None


def _default(settings: type[BaseModel], key: str) -> Any:
    return settings.model_fields[key].default


def _map_hyperparameters(
    hyper: dict[str, Any], train_rows: int, source: str, report: ImportReport
) -> dict[str, Any]:
    """The recipe's `rl` and `eval` sections from OpenAI's hyperparameters ("auto" keeps rft's default)."""
    given = {
        k: v
        for k, v in hyper.items()
        if k in MAPPING and v is not None and not (isinstance(v, str) and v in _NO_EFFECT)
    }
    report.unknown += [
        f"method.reinforcement.hyperparameters.{k}" for k in hyper if k not in MAPPING
    ]
    rl = _rl_section(given, train_rows, source)
    evaluation = {
        key: _positive(given[name], name, source, integer=True)
        for name, key in (("eval_interval", "interval"), ("eval_samples", "samples"))
        if name in given
    }
    for name in ("compute_multiplier", "reasoning_effort"):
        if name in given:
            report.unsupported.append(
                f"method.reinforcement.hyperparameters.{name}: {json.dumps(given[name])} ({MAPPING[name][1]})"
            )
    report.mapping = _mapping_rows(hyper, rl, evaluation, train_rows)
    return {"rl": rl, "eval": evaluation}


def _rl_section(given: dict[str, Any], train_rows: int, source: str) -> dict[str, Any]:
    """`rl` keys from batch_size, n_epochs and learning_rate_multiplier (the ones the job sets)."""
    rl: dict[str, Any] = {}
    if "batch_size" in given:
        rl["prompts_per_step"] = _positive(given["batch_size"], "batch_size", source, integer=True)
        batch = rl["prompts_per_step"] * _default(RLSettings, "samples_per_prompt")
        mini = math.gcd(batch, _default(RLSettings, "mini_batch_size"))
        if mini != _default(RLSettings, "mini_batch_size"):
            rl["mini_batch_size"] = mini  # the batch must split into whole minibatches
    if "n_epochs" in given:
        epochs = _positive(given["n_epochs"], "n_epochs", source, integer=True)
        prompts = rl.get("prompts_per_step", _default(RLSettings, "prompts_per_step"))
        rl["steps"] = max(1, math.ceil(train_rows * epochs / prompts))
    if "learning_rate_multiplier" in given:
        multiplier = _positive(
            given["learning_rate_multiplier"], "learning_rate_multiplier", source, integer=False
        )
        rl["learning_rate"] = float(f"{_default(RLSettings, 'learning_rate') * multiplier:.6g}")
        if rl["learning_rate"] >= 1:
            raise ConfigError(
                f"{source}: method.reinforcement.hyperparameters.learning_rate_multiplier: {multiplier:g} makes "
                f"rl.learning_rate {rl['learning_rate']:g} (at least 1); use a smaller multiplier"
            )
    return rl


def _mapping_rows(
    hyper: dict[str, Any], rl: dict[str, Any], evaluation: dict[str, Any], train_rows: int
) -> list[dict[str, Any]]:
    """One row per OpenAI hyperparameter: its value in the job and the rft value it became."""
    written = {"rl." + k: v for k, v in rl.items()} | {
        "eval." + k: v for k, v in evaluation.items()
    }
    defaults = {
        "rl.steps": _default(RLSettings, "steps"),
        "rl.prompts_per_step": _default(RLSettings, "prompts_per_step"),
        "rl.learning_rate": _default(RLSettings, "learning_rate"),
        "eval.interval": _default(EvalSettings, "interval"),
        "eval.samples": _default(EvalSettings, "samples"),
    }
    rows = []
    for name, (key, note) in MAPPING.items():
        value = hyper.get(name, "auto")
        if key in written:
            rft_value: Any = written[key]
            if key == "rl.prompts_per_step" and "rl.mini_batch_size" in written:
                rft_value = f"{rft_value} (rl.mini_batch_size {written['rl.mini_batch_size']})"
        elif key in defaults:
            rft_value = f"{defaults[key]} (rft default)"
        else:
            rft_value = "-"
        rows.append(
            {"openai": name, "value": value, "rft": key, "rft_value": rft_value, "note": note}
        )
    steps = rl.get("steps", _default(RLSettings, "steps"))
    prompts = rl.get("prompts_per_step", _default(RLSettings, "prompts_per_step"))
    rows[0]["note"] += (
        f" ({train_rows} rows; {steps} steps = {steps * prompts / max(train_rows, 1):.3g} epochs)"
    )
    return rows


def _seed(value: Any, source: str) -> int:
    """OpenAI's seed, which rft takes as is when it fits numpy's 32-bit seeds."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise ConfigError(
            f"{source}: seed: expected an integer from 0 to {2**32 - 1}, not {json.dumps(value)}"
        )
    return value


def _safe_name(suffix: str) -> str:
    """A run-folder name from OpenAI's model-name suffix (letters, digits, '.', '_', '-')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", suffix).strip("-.") or "run"


def _data_paths(
    job: dict[str, Any], training_file: Path | None, validation_file: Path | None, source: str
) -> tuple[Path, Path | None]:
    """The local files that stand in for the job's OpenAI file ids (which name no local file)."""
    if training_file is None:
        file_id = job.get("training_file") or "(none)"
        raise ConfigError(
            f"{source}: training_file {file_id} is an OpenAI file id, not a local file; pass the JSONL you "
            "uploaded with --training-file TRAIN.jsonl"
        )
    if validation_file is None and job.get("validation_file"):
        raise ConfigError(
            f"{source}: validation_file {job['validation_file']} is an OpenAI file id, not a local file; pass "
            "the JSONL you uploaded with --validation-file VALID.jsonl"
        )
    for path in (training_file, validation_file):
        if path is not None and not files.is_file(path):
            raise ConfigError(f"{path}: file not found (give the path of the JSONL file)")
    return training_file.resolve(), validation_file.resolve() if validation_file else None


def build_recipe(
    job: dict[str, Any],
    model: str,
    train: Path,
    valid: Path | None,
    grader_name: str,
    source: str,
    report: ImportReport,
) -> dict[str, Any]:
    """The recipe mapping (before its comment block) for `job`."""
    section = _reinforcement(job, source)
    _check_fields(job, section, report)
    hyper = section.get("hyperparameters") or {}
    if not isinstance(hyper, dict):
        raise ConfigError(
            f"{source}: method.reinforcement.hyperparameters: expected an object, not {json.dumps(hyper)}"
        )
    stages = _map_hyperparameters(hyper, count_rows(train), source, report)
    recipe: dict[str, Any] = {"model": {"name": model}, "data": {"train": str(train)}}
    if valid is not None:
        recipe["data"]["valid"] = str(valid)
    recipe["grader"] = grader_name
    recipe["sft"] = {"enabled": False}
    recipe["rl"] = {"algorithm": "ppo", **stages["rl"]}
    if reads_output_tools(section["grader"]):
        recipe["rl"]["max_grader_error_share"] = (
            1.0  # see the comment block: an answer without a call is an error
        )
    if stages["eval"]:
        recipe["eval"] = stages["eval"]
    recipe.update(_agent_sections(section, source, report))
    if job.get("seed") is not None:
        recipe["seed"] = _seed(job["seed"], source)
    if job.get("suffix"):
        recipe["output_dir"] = f"runs/{_safe_name(str(job['suffix']))}"
    return recipe


def reads_output_tools(grader: Any) -> bool:
    """Whether a grader reads `sample.output_tools` (a tool-call grader)."""
    return re.search(r"sample\s*\.\s*output_tools", json.dumps(grader)) is not None


def _comment_block(job: dict[str, Any], report: ImportReport, source: str) -> str:
    """The recipe's header: where it came from and how each OpenAI setting was carried across."""
    lines = [
        f"Imported from the OpenAI fine-tuning job {source} by `rft import openai`.",
        f"OpenAI model {job.get('model')!s}: model.name is the open model to train instead (OpenAI models have no local weights).",
        "SFT warm-up: OpenAI's RFT has none, so sft.enabled is false; set it to true if your rows carry",
        "demonstrations (a final assistant message, text or tool_calls, or a `solution` field) to warm up as ReFT does.",
        "seed -> seed; suffix -> output_dir (runs/<suffix>); training_file/validation_file -> data.train/data.valid.",
        *(
            [
                "The grader reads sample.output_tools: an answer with no tool call scores 0 (an invalid_variable_error);",
                "rl.max_grader_error_share: 1.0 keeps such answers from stopping the run while the model learns to",
                "call tools (`rft validate --grader` checks the grader against the demonstrations).",
            ]
            if reads_output_tools(job["method"]["reinforcement"]["grader"])
            else []
        ),
        *_agent_comment(job["method"]["reinforcement"], report),
        "",
        "OpenAI hyperparameter      value      -> rft key              rft value",
    ]
    for row in report.mapping:
        lines.append(
            f"  {row['openai']:<24} {json.dumps(row['value']):<10} -> {row['rft']:<20} {row['rft_value']}"
        )
        lines.append(f"      {row['note']}")
    for title, items in (
        ("Not carried across", report.unsupported),
        ("Unknown fields (not read)", report.unknown),
    ):
        if items:
            lines += ["", f"{title}:"] + [f"  {item}" for item in items]
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


def _agent_comment(section: dict[str, Any], report: ImportReport) -> list[str]:
    if not section.get("tools"):
        return []
    lines = [
        "Agent RFT: tools -> tools (the same endpoints; each call is POSTed as OpenAI does), max_episode_steps ->",
        "episode.max_episode_steps. `rft train` trains over whole episodes against the endpoints (PPO or GRPO),",
        "and `rft eval --tools <this recipe>` runs episodes with them (docs/agent.md).",
        "The tools' schemas come from the rows' `tools` (OpenAI's shape), as in the job.",
    ]
    if report.secrets:
        lines.append(
            "Secret headers are read from the environment, never from this file: export "
            + ", ".join(report.secrets)
            + " (each the value the job sent)."
        )
    return lines


def import_openai_job(
    job_path: str | Path,
    output: str | Path,
    model: str,
    training_file: Path | None = None,
    validation_file: Path | None = None,
    overwrite: bool = False,
) -> ImportReport:
    """Write `output` (a recipe for `rft train`) and its grader beside it from an OpenAI RFT job.

    Args:
        job_path: the JSON body of an OpenAI fine-tuning job (or the job object the API returns).
        output: the recipe YAML to write; the grader goes to `<stem>.grader.json` beside it.
        model: the open model to train (hub id or local folder).
        training_file, validation_file: the local JSONL files behind the job's OpenAI file ids.
        overwrite: replace existing files instead of raising ConfigError.

    Returns:
        An ImportReport: the files written, the hyperparameter mapping and every field not carried across.

    Example:
        >>> import_openai_job("job.json", "recipe.yaml", "Qwen/Qwen2.5-0.5B-Instruct",
        ...                   Path("train.jsonl"), Path("valid.jsonl")).unsupported  # doctest: +SKIP
        []
    """
    import yaml

    source, output = str(job_path), Path(output)
    job = read_job(job_path)
    grader_path = output.with_name(f"{output.stem}.grader.json")
    report = ImportReport(recipe=output, grader=grader_path)
    train, valid = _data_paths(job, training_file, validation_file, source)
    recipe = build_recipe(job, model, train, valid, grader_path.name, source, report)
    grader = job["method"]["reinforcement"]["grader"]
    build_grader(grader, source=f"{source}: method.reinforcement.grader").close()
    for path in (output, grader_path):
        if path.exists() and not overwrite:
            raise ConfigError(f"{path}: already exists; pass --force to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    grader_path.write_text(
        json.dumps(grader, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    body = yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)
    output.write_text(_comment_block(job, report, source) + body, encoding="utf-8")
    try:
        load_run_config(
            output
        )  # what we wrote must be a recipe `rft train` accepts (a seed out of range, ...)
    except ConfigError:
        output.unlink()
        grader_path.unlink()
        raise
    return report
