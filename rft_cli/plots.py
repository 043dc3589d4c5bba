"""Plots of runs (`rft report -o`) and of evaluations (`rft eval --plot`), as PNG or HTML.

matplotlib is an optional extra (`pip install 'rft-cli[plots]'`); it is imported only to plot.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from rft_cli.errors import ConfigError
from rft_cli.run_folder.summary import RunReport, as_number

# (metric keys, panel title); the panels of a run report, in order. A run is drawn with the first
# key it logged: RLOO logs no k3, so its KL is its per-token log-ratio (labelled so).
PANELS = [
    (("train_reward_mean",), "Train reward (mean)"),
    (("valid_reward_mean",), "Validation reward (mean)"),
    (("kl", "kl_logratio"), "KL to the reference, per token (k3)"),
    (("response_length_mean",), "Response length (tokens)"),
]


def require_matplotlib() -> Any:
    """Import matplotlib with a headless backend, or raise ConfigError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(
            "plots need matplotlib, an optional extra: pip install 'rft-cli[plots]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _check_output(path: Path) -> str:
    kind = path.suffix.lower()
    if kind not in (".png", ".html", ".htm"):
        raise ConfigError(f"{path}: the report must be a .png or .html file")
    return kind


def plot_runs(reports: list[RunReport], output: str | Path) -> Path:
    """Plot train/valid reward, KL and response length against step for one or more runs.

    Each run gets one colour. The x axis is the run's step: SFT steps, then RL steps after them
    (a dotted line marks where RL starts); SFT is drawn dashed with square markers. Writes a PNG,
    or an HTML page with the summary table and the plot embedded.
    """
    output = Path(output)
    kind = _check_output(output)
    plt = require_matplotlib()
    from matplotlib import ticker

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (keys, title) in zip(axes.flat, PANELS, strict=True):
        drawn = 0
        for i, report in enumerate(reports):
            key = panel_key(report, keys)
            note = "" if key == keys[0] else key
            drawn += _plot_metric(ax, report, key, colours[i % len(colours)], note)
        ax.set_title(title)
        ax.set_xlabel("step (SFT, then RL)")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(
                0.5,
                0.5,
                f"no {keys[0]} logged",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="grey",
            )
    return _save(fig, plt, output, kind, _runs_table_html(reports))


def panel_key(report: RunReport, keys: tuple[str, ...]) -> str:
    """The first of a panel's `keys` the run logged (the first key when it logged none)."""
    return next((k for k in keys if any(k in r for r in report.records)), keys[0])


def _rl_offset(report: RunReport) -> float:
    """RL steps are drawn after the SFT steps: RL step n sits at x = (last SFT step) + n."""
    sft = next((s for s in report.stages if s.stage == "sft"), None)
    return float(sft.last_step or 0) if sft else 0.0


def _plot_metric(ax: Any, report: RunReport, key: str, colour: str, note: str = "") -> int:
    """Draw one line per stage (`note` added to its label); returns how many lines were drawn."""
    offset = _rl_offset(report)
    by_stage: dict[str, tuple[list[float], list[float]]] = {}
    for r in report.records:
        value, step = as_number(r.get(key)), as_number(r.get("step"))
        if value is not None and step is not None:
            stage = str(r.get("stage", ""))
            xs, ys = by_stage.setdefault(stage, ([], []))
            xs.append(step + (offset if stage == "rl" else 0.0))
            ys.append(value)
    name = Path(report.run).name or report.run
    for stage, (xs, ys) in by_stage.items():
        label = (f"{name} ({stage})" if stage else name) + (f" {note}" if note else "")
        sft = stage == "sft"
        ax.plot(
            xs,
            ys,
            color=colour,
            linestyle="--" if sft else "-",
            label=label,
            marker=("s" if sft else "o") if len(xs) < 30 else None,
            markersize=4 if sft else 3,
        )
    if offset and by_stage:
        ax.axvline(offset, color=colour, linestyle=":", linewidth=1, alpha=0.6)
    return len(by_stage)


def plot_eval_comparison(reports: list[Any], output: str | Path) -> Path:
    """Bar chart of mean reward, pass@1, pass@k and maj@k for each evaluated model (EvalReports)."""
    output = Path(output)
    kind = _check_output(output)
    plt = require_matplotlib()
    metrics = _eval_bars(reports)
    fig, ax = plt.subplots(figsize=(max(6, 2 + 1.8 * len(reports)), 4.5), constrained_layout=True)
    width = 0.8 / len(metrics)
    for j, (label, values) in enumerate(metrics.items()):
        xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(reports))]
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7)
    ax.set_xticks(range(len(reports)), [_short(r.model) for r in reports], rotation=15)
    ax.set_ylim(0, 1.25)
    ax.set_ylabel("score")
    ax.set_title(f"rft eval: {reports[0].rows} rows")
    ax.legend(fontsize=8, ncol=len(metrics), loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, plt, output, kind, _eval_table_html(reports, metrics))


def _eval_bars(reports: list[Any]) -> dict[str, list[float]]:
    ks = {r.samples for r in reports}
    k = str(ks.pop()) if len(ks) == 1 else "k"
    metrics = {
        "mean reward": [r.mean_reward for r in reports],
        "pass@1": [r.pass_at[1] for r in reports],
    }
    if any(r.samples > 1 for r in reports):
        metrics[f"pass@{k}"] = [r.pass_at[r.samples] for r in reports]
    if any(r.maj_at_k is not None for r in reports):
        metrics[f"maj@{k}"] = [r.maj_at_k or 0.0 for r in reports]
    return metrics


def _eval_table_html(reports: list[Any], metrics: dict[str, list[float]]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for label in metrics)
    rows = []
    for i, r in enumerate(reports):
        cells = "".join(f"<td>{values[i]:.4f}</td>" for values in metrics.values())
        rows.append(
            f"<tr><td>{html.escape(r.model)}</td><td>{r.rows}</td><td>{r.samples}</td>{cells}</tr>"
        )
    return f"<table><tr><th>model</th><th>rows</th><th>k</th>{head}</tr>{''.join(rows)}</table>"


def _short(name: str) -> str:
    parts = Path(name).parts
    return "/".join(parts[-2:]) if len(parts) > 2 else name


def _save(fig: Any, plt: Any, output: Path, kind: str, table_html: str) -> Path:
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        if kind == ".png":
            fig.savefig(output, dpi=110)
        else:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=110)
            image = base64.b64encode(buffer.getvalue()).decode("ascii")
            output.write_text(_HTML.format(table=table_html, image=image), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{output}: cannot write the report ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
    return output


def _runs_table_html(reports: list[RunReport]) -> str:
    rows = []
    for r in reports:
        stages = ", ".join(f"{s.stage} ({s.records})" for s in r.stages)
        best = (
            "-"
            if r.best_valid_reward is None
            else f"{r.best_valid_reward:.4f} at step {r.best_valid_step}"
        )
        rows.append(
            f"<tr><td>{html.escape(r.run)}</td><td>{html.escape(stages)}</td><td>{best}</td></tr>"
        )
    return (
        "<table><tr><th>run</th><th>stages (records)</th><th>best valid_reward_mean</th></tr>"
        + "".join(rows)
        + "</table>"
    )


_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>rft report</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 12px;border-bottom:1px solid #ddd;text-align:left}}</style>
</head><body><h1>rft report</h1>
{table}
<p><img alt="metrics plot" src="data:image/png;base64,{image}"></p>
</body></html>
"""
