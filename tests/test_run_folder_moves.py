"""A run folder is movable: its checkpoints and final/ load from any folder, wherever the run now lives."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app
from rft_cli.config import load_run_config
from rft_cli.run_folder import checkpoints as ckpt
from rft_cli.training.run import train

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"
VALID = RECIPE.parent / "data" / "tiny-valid.jsonl"
EXACT = 'type: string_check\nname: exact\ninput: "{{ sample.output_text }}"\nreference: "{{ item.answer }}"\noperation: eq\n'


def _evaluate(model: Path, grader: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["eval", "--model", str(model), "--data", str(VALID), "--grader", str(grader)]
        + ["--max-new-tokens", "4", "--limit", "2"],
    )
    assert result.exit_code == 0, result.output


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["ppo", "grpo", "rloo"])
def test_a_lora_run_folder_moves_and_loads_from_another_folder(algorithm, tmp_path, monkeypatch):
    """Regression (issue 27): a GRPO/RLOO LoRA checkpoint holds adapters only, and peft recorded
    their base model as TRL loaded it, `run/checkpoints/sft`, relative to the folder training ran
    in: `rft eval --model /abs/run/checkpoints/step-1` from another folder exited 2 ("Repo id must
    be in the form ..."), and a moved run could not write final/ again on --resume."""
    (tmp_path / "project").mkdir()
    (tmp_path / "elsewhere").mkdir()
    grader = tmp_path / "exact.yaml"
    grader.write_text(EXACT)
    overrides = [f"rl.algorithm={algorithm}", "model.lora.r=4", "sft.max_steps=1", "rl.steps=1"]
    config = load_run_config(RECIPE, overrides)
    monkeypatch.chdir(tmp_path / "project")
    train(config, output_dir="run")  # as `rft train RECIPE -o run`: a relative run folder
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "project" / "run", moved)
    monkeypatch.chdir(tmp_path / "elsewhere")

    _evaluate(moved / "checkpoints" / "step-1", grader)
    _evaluate(moved, grader)  # final/
    shutil.rmtree(moved / "final")  # --resume of a finished run writes final/ again, from step-1
    train(config, output_dir=moved, resume=True)
    _evaluate(moved, grader)
    adapters = moved / "checkpoints" / "step-1" / ("adapter" if algorithm == "ppo" else "")
    assert Path(ckpt.adapter_base(adapters)).resolve() == (moved / "checkpoints" / "sft").resolve()
