"""Run reports: metrics.jsonl summaries (torn lines included) and the plots of `rft report`."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.errors import ConfigError, DataError
from rft_cli.plots import plot_runs
from rft_cli.run_folder.metrics import read_metrics
from rft_cli.run_folder.summary import summarize_run

runner = CliRunner()


def _write_run(run, reward_scale=1.0, torn=True):
    """A synthetic run: 4 SFT steps, then 12 RL steps with validation every 3 steps."""
    run.mkdir(parents=True)
    records = [
        {"stage": "sft", "step": s, "loss": 2.0 - 0.3 * s, "learning_rate": 1e-4}
        for s in range(1, 5)
    ]
    records.append({"stage": "sft", "step": 4, "valid_reward_mean": 0.2 * reward_scale})
    for s in range(1, 13):
        record = {
            "stage": "rl",
            "step": s,
            "train_reward_mean": reward_scale * s / 12,
            "kl": 0.01 * s,
            "response_length_mean": 40 + s,
            "policy_loss": -0.1,
            "grader_errors/timeout": 0,
        }
        if s % 3 == 0:
            record["valid_reward_mean"] = reward_scale * [0.3, 0.55, 0.5, 0.45][s // 3 - 1]
        records.append(record)
    text = "".join(json.dumps(r) + "\n" for r in records)
    if torn:
        text += '{"stage": "rl", "step": 13, "train_rew'
    (run / "metrics.jsonl").write_text(text)
    (run / "summary.json").write_text(json.dumps({"status": "completed"}))
    return run


def test_torn_last_line_is_skipped_with_a_warning(tmp_path):
    run = _write_run(tmp_path / "run")
    warnings: list[str] = []
    records = read_metrics(run / "metrics.jsonl", warnings)
    assert len(records) == 17
    assert len(warnings) == 1 and "the last line is not complete JSON" in warnings[0]


def test_summary_of_a_run(tmp_path):
    report = summarize_run(_write_run(tmp_path / "run"))
    assert [(s.stage, s.records, s.first_step, s.last_step) for s in report.stages] == [
        ("sft", 5, 1, 4),
        ("rl", 12, 1, 12),
    ]
    assert (report.best_valid_reward, report.best_valid_step, report.best_valid_stage) == (
        0.55,
        6,
        "rl",
    )
    assert report.last["train_reward_mean"] == 1.0 and report.last_step["train_reward_mean"] == 12
    assert report.last["loss"] == pytest.approx(0.8) and report.last_step["loss"] == 4
    assert report.last["valid_reward_mean"] == 0.45
    assert report.summary == {"status": "completed"}


def test_null_values_do_not_count(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        '{"stage": "rl", "step": 1, "kl": 0.5}\n{"stage": "rl", "step": 2, "kl": null}\n'
    )
    report = summarize_run(run)
    assert report.last["kl"] == 0.5 and report.best_valid_reward is None


def test_not_a_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="no metrics.jsonl"):
        summarize_run(tmp_path)
    with pytest.raises(ConfigError, match="no such run folder"):
        summarize_run(tmp_path / "missing")


def test_empty_metrics(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(DataError, match="no metrics logged yet"):
        summarize_run(tmp_path)


def _distinct_colours(png):
    import matplotlib.image
    import numpy as np

    pixels = matplotlib.image.imread(png)[..., :3].reshape(-1, 3)
    return len(np.unique((pixels * 255).astype(np.uint8), axis=0))


def test_png_of_two_runs_is_non_trivial(tmp_path):
    reports = [
        summarize_run(_write_run(tmp_path / "a")),
        summarize_run(_write_run(tmp_path / "b", 0.5)),
    ]
    out = plot_runs(reports, tmp_path / "report.png")
    assert out.stat().st_size > 5_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _distinct_colours(out) > 20  # two line colours, anti-aliasing, text: not a blank canvas


def test_html_report_embeds_the_plot(tmp_path):
    report = summarize_run(_write_run(tmp_path / "a"))
    out = plot_runs([report], tmp_path / "report.html")
    text = out.read_text()
    assert "data:image/png;base64," in text and "0.5500 at step 6" in text
    assert len(text) > 5_000


def test_without_matplotlib_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    report = summarize_run(_write_run(tmp_path / "a"))
    with pytest.raises(ConfigError, match=r"pip install 'rft-cli\[plots\]'"):
        plot_runs([report], tmp_path / "report.png")


def test_cli_report_text(tmp_path):
    run = _write_run(tmp_path / "run")
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert "best valid_reward_mean: 0.5500 at step 6 (rl)" in result.stdout
    assert "train_reward_mean" in result.stdout
    assert "last line is not complete JSON" in result.stderr


def test_cli_report_json_and_png(tmp_path):
    a, b = _write_run(tmp_path / "a"), _write_run(tmp_path / "b", 0.5, torn=False)
    out = tmp_path / "cmp.png"
    result = runner.invoke(
        app, ["report", str(a), str(b), "--output", str(out), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [r["best_valid_reward_mean"] for r in doc["runs"]] == [0.55, 0.275]
    assert doc["runs"][1]["warnings"] == []
    assert out.stat().st_size > 5_000


@pytest.mark.parametrize(
    "args,message",
    [
        (["{missing}"], "no such run folder"),
        (["{run}", "--output", "{tmp}/r.pdf"], "must be a .png or .html"),
    ],
)
def test_cli_report_usage_errors(tmp_path, args, message):
    run = _write_run(tmp_path / "run")
    args = [a.format(missing=tmp_path / "nope", run=run, tmp=tmp_path) for a in args]
    result = runner.invoke(app, ["report", *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_cli_report_without_matplotlib_exits_2(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = runner.invoke(
        app, ["report", str(_write_run(tmp_path / "run")), "--output", str(tmp_path / "r.png")]
    )
    assert result.exit_code == 2
    assert "matplotlib" in result.stderr


def test_rl_steps_are_plotted_after_sft_steps(tmp_path):
    """SFT and RL both count from 1; drawn on one axis, RL step 1 must come after the last SFT step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rft_cli.plots import _plot_metric

    report = summarize_run(_write_run(tmp_path / "a"))
    fig, ax = plt.subplots()
    _plot_metric(ax, report, "valid_reward_mean", "C0")
    lines = {line.get_label(): list(line.get_xdata()) for line in ax.get_lines()}
    plt.close(fig)
    assert lines["a (sft)"] == [4] and lines["a (rl)"] == [7, 10, 13, 16]


def test_the_kl_panel_draws_one_quantity_per_run(tmp_path):
    """Regression (issue 27): PPO logged the summed log-ratio per answer as `kl` (negative at times)
    and GRPO the per-token k3, on one axis. Now `kl` is the per-token k3 for both; RLOO, which logs
    no k3, is drawn with its per-token log-ratio and labelled so; an older PPO run's `kl` is read
    as what it was, `kl_sum`."""
    from rft_cli.plots import PANELS, panel_key

    keys = next(keys for keys, title in PANELS if "KL" in title)
    rows = {
        "ppo": {"kl": 0.01, "kl_logratio": 0.012, "kl_sum": 0.4, "kl_coef": 0.05},
        "grpo": {"kl": 0.01},
        "rloo": {"kl_logratio": 0.011},
        "old-ppo": {"kl": -0.4, "kl_coef": 0.05},
    }
    drawn = {}
    for name, values in rows.items():
        (tmp_path / name).mkdir()
        line = {"stage": "rl", "step": 1, "train_reward_mean": 0.5, **values}
        (tmp_path / name / "metrics.jsonl").write_text(json.dumps(line) + "\n")
        report = summarize_run(tmp_path / name)
        drawn[name] = (panel_key(report, keys), report.last.get("kl_sum"))
    assert drawn == {
        "ppo": ("kl", 0.4),
        "grpo": ("kl", None),
        "rloo": ("kl_logratio", None),
        "old-ppo": ("kl", -0.4),  # no per-token KL logged: the panel says so, kl_sum holds it
    }
    old = summarize_run(tmp_path / "old-ppo")
    assert "kl" not in old.last and old.last["kl_sum"] == -0.4
