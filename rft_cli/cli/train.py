"""`rft train`: SFT warm-up then PPO (ReFT), or GRPO/RLOO, from one YAML config."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from rft_cli.cli import render
from rft_cli.cli.app import app
from rft_cli.cli.ticker import Ticker, progress_interval


class _Progress:
    """Progress on stderr. In a terminal, a one-line Rich status: stage, step, time left, the last
    train and validation reward, KL and the alarms raised so far. Elsewhere (a CI log, `nohup`),
    where that status shows nothing, the same as plain lines at most every $RFT_PROGRESS_INTERVAL
    seconds (`rft_cli.cli.ticker`). Each alarm is also printed once, when raised."""

    def __init__(self, totals: dict[str, int], quiet: bool):
        self.totals, self.quiet = totals, quiet
        self.status: Any = None
        self.ticker: Ticker | None = None
        self.stage_started: dict[str, tuple[float, int]] = {}
        self.last_valid: dict[str, float] = {}
        self.alarms: list[str] = []

    def __enter__(self) -> _Progress:  # noqa: PYI034 (Python 3.10 has no typing.Self)
        from rft_cli.training.run import is_main_process

        if self.quiet or not is_main_process():  # under `accelerate launch` one process shows it
            return self
        if render.stderr.is_terminal:
            self.status = render.stderr.status("starting...")
            self.status.__enter__()
        else:
            self.ticker = Ticker(progress_interval())
            self.ticker.start("starting: checking the config, data and grader")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.__exit__(*exc)
        if self.ticker is not None:
            self.ticker.stop()

    def checked(self, pre: Any) -> None:
        """The preflight passed: warn about the grader self-test, learn the warm-up's length."""
        _warn_self_test(pre.grader_check)
        self.totals["sft"] = pre.plan["stages"].get("sft", {}).get("steps", 0)
        self._show("checks passed; loading the model", now=True)

    def evaluating(self, stage: str, step: int, rows: int) -> Any:
        """An evaluation starts (`RunContext.evaluate`); returns what its generation reports to."""
        self._show(f"{stage} step {step}: evaluating {rows} validation rows")

        def report(done: int, total: int) -> None:
            self._show(f"{stage} step {step}: evaluating, {done}/{total} validation answers")

        return report

    def __call__(self, record: dict[str, Any]) -> None:
        for alarm in record.get("alarms") or []:  # printed even with --quiet: an alarm is a warning
            self.alarms.append(alarm["name"])
            render.warning(
                f"alarm {alarm['name']} at {record.get('stage')} step {record.get('step')}: "
                f"{alarm['message']} ({alarm['meaning']})"
            )
        if record.get("samples_error"):
            render.warning(str(record["samples_error"]))
        if self.status is None and self.ticker is None:
            return
        stage, step = record.get("stage", "?"), int(record.get("step", 0))
        if isinstance(record.get("valid_reward_mean"), (int, float)):
            self.last_valid[stage] = record["valid_reward_mean"]
        first = stage not in self.stage_started
        line = self._step_line(record, stage, step)
        self._show(line, now=first or step == self.totals.get(stage))
        if record.get("valid_reward_mean") is not None:
            render.stderr.print(
                f"{stage} step {step}: valid_reward_mean {record['valid_reward_mean']:.4f}"
            )

    def _step_line(self, record: dict[str, Any], stage: str, step: int) -> str:
        """`rl step 3/10  41.2 s/step  ~288s left  reward 0.5  kl 0.0012  valid 0.4  12 tok/s`."""
        total = self.totals.get(stage, 0)
        first_time, first_step = self.stage_started.setdefault(stage, (time.monotonic(), step))
        parts = [f"{stage} step {step}/{total}"]
        if step > first_step:  # a rate needs two lines of this stage
            per_step = (time.monotonic() - first_time) / (step - first_step)
            parts.append(f"{per_step:.3g} s/step")
            parts.append(f"~{per_step * max(total - step, 0):.0f}s left")
        kl = "kl" if "kl" in record else "kl_logratio"  # RLOO logs no k3
        for key, label in (("loss", "loss"), ("train_reward_mean", "reward"), (kl, kl)):
            if isinstance(record.get(key), (int, float)):
                parts.append(f"{label} {record[key]:.4g}")
        if stage in self.last_valid:
            parts.append(f"valid {self.last_valid[stage]:.4g}")
        if isinstance(record.get("tokens_per_second"), (int, float)):
            parts.append(f"{record['tokens_per_second']:.0f} tok/s")
        if self.alarms:
            parts.append(f"alarms: {', '.join(self.alarms)}")
        return "  ".join(parts)

    def _show(self, text: str, now: bool = False) -> None:
        if self.status is not None:
            self.status.update(escape(text))
        if self.ticker is not None:
            self.ticker.update(text, now=now)


def _print_plan(plan: dict[str, Any], run_dir: Path) -> None:
    render.json_document({"dry_run": True, "output_dir": str(run_dir), **plan})


def _rl_gain(stages: dict[str, Any]) -> tuple[float | None, float | None] | None:
    """What RL added over the warm-up, on the validation rows (None where a stage was not evaluated)."""
    sft, rl = stages.get("sft") or {}, stages.get("rl") or {}

    def gain(key: str) -> float | None:
        both = isinstance(rl.get(key), float | int) and isinstance(sft.get(key), float | int)
        return rl[key] - sft[key] if both else None

    gains = (gain("valid_reward_mean"), gain("valid_accuracy"))
    return gains if any(g is not None for g in gains) else None


def _print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    from rich.table import Table

    from rft_cli.cli.render import safe

    table = Table(title=f"rft train: {safe(run_dir)}")
    columns = ("steps", "valid_reward_mean", "valid_accuracy", "elapsed_s", "eval_s")
    for column in ("stage", *columns):
        table.add_column(column)
    for name, values in summary["stages"].items():
        cells = [values.get(k) for k in columns]
        table.add_row(
            name,
            *("-" if c is None else f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells),
        )
    difference = _rl_gain(summary["stages"])
    if difference:
        table.add_row(
            "rl - sft", "", *(f"{d:+.4g}" if d is not None else "-" for d in difference), "", ""
        )
    if isinstance(summary.get("elapsed_s"), (int, float)):
        table.add_row("total", "", "", "", f"{summary['elapsed_s']:.4g}", "")
    render.stdout.print(table)
    for alarm in summary.get("alarms") or []:
        render.stdout.print(
            safe(
                f"alarm {alarm['name']} at {alarm['stage']} step {alarm['step']}: {alarm['message']}"
            )
        )
    stopped = summary.get("stopped") or {}
    if stopped.get("early_stop"):
        render.stdout.print(
            safe(
                f"rl stopped early at step {stopped['step']} ({stopped['early_stop']}: "
                f"{stopped['reason']}); alarms.early_stop lists the alarms that may end it"
            )
        )
    if summary.get("final"):
        render.stdout.print(
            safe(
                f"final model: {run_dir / summary['final']} (from {summary.get('final_source')}{_scores(summary)})"
            )
        )


def _scores(summary: dict[str, Any]) -> str:
    return render.final_scores(summary)


def _resume_command(config_path: Path, run_dir: Path, stage: str, overrides: list[str]) -> str:
    """The `rft train` command that continues this one: same stage and --set values, plus --resume."""
    import shlex

    words = ["rft", "train", str(config_path), "--output-dir", str(run_dir)]
    if stage != "all":
        words += ["--stage", stage]
    for override in overrides:
        words += ["--set", override]
    return shlex.join([*words, "--resume"])


def _warn_self_test(report: Any) -> None:
    """Demonstrations the grader scores below full marks, under the share that stops a run: a warning."""
    if report is None or not report.failures:
        return
    shown = ", ".join(f"{f.file} line {f.line}" for f in report.failures[:5])
    more = f" and {len(report.failures) - 5} more" if len(report.failures) > 5 else ""
    render.warning(f"grader self-test: {report.summary()} (below: {shown}{more})")


@app.command()
def train(
    config_path: Annotated[
        Path,
        typer.Argument(
            metavar="CONFIG.yaml",
            help="The run config, a YAML recipe (keys: docs/training.md; `rft config schema` for editor completion).",
        ),
    ],
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-o",
            help="Run folder (default: the config's output_dir, else $RFT_HOME/runs/<config name>).",
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a config key, the value read as YAML: --set rl.kl_coef=0.1 (repeatable).",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in the output folder from its last complete checkpoint.",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Check config, data and grader, print the plan, train nothing."
        ),
    ] = False,
    stage: Annotated[
        str,
        typer.Option(
            "--stage",
            help="all: warm-up then RL; sft: the warm-up only; rl: RL only, from the warm-up a --stage sft run saved in the same folder (or from the model when sft.enabled is false).",
        ),
    ] = "all",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Train a model: SFT warm-up on the demonstrations, then PPO with the grader's reward (ReFT).

    Before any model loads, config, data and grader are checked, and the grader grades each demonstration as if the model wrote it (grader_check): too many below full marks stop the run.

    Progress goes to stderr (in a log rather than a terminal: a plain line at most every $RFT_PROGRESS_INTERVAL seconds, default 30), the summary to stdout; Ctrl-C saves a checkpoint and exits 130.

    Example:

        rft train recipes/tiny-test.yaml --output-dir runs/tiny --set rl.kl_coef=0.1
    """
    from rft_cli.config import load_run_config
    from rft_cli.training.preflight import plan_run
    from rft_cli.training.run import train as run_train

    config = load_run_config(config_path, overrides or [])
    run_dir = output_dir or config.resolved_output_dir(config_path)
    if dry_run:
        _print_plan(plan_run(config, stage=stage), run_dir)
        return
    with _Progress({"sft": 0, "rl": config.rl.steps}, quiet) as progress:
        try:
            result = run_train(
                config,
                config_path=config_path,
                output_dir=run_dir,
                stage=stage,
                resume=resume,
                progress=progress,
                on_checked=progress.checked,
            )
        except KeyboardInterrupt:
            render.error(
                "interrupted (Ctrl-C); a checkpoint was saved, continue with: "
                + _resume_command(config_path, run_dir, stage, overrides or [])
            )
            raise typer.Exit(code=130) from None
    if result.summary:  # empty in the non-main processes of a multi-GPU run
        _print_summary(result.summary, result.run_dir)
