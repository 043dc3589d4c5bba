"""The stage protocol (rft_cli/training/stage_loop.py), told the same stories under every stage.

SFT, GRPO and RLOO reach it through the TRL callback (`trl_bridge.RunFolderCallback`), driven
here by a stand-in for TRL's loop that calls the callbacks in the order `transformers.Trainer`
does (`_trl_train`: on_step_end, then on_log and on_save when the flags ask); PPO through its own
driver (`stage_loop.run_steps`) with scripted steps. No model is built: a step's metrics, its
numerical faults and its validation scores are scripted. The real trainers run the same
protocol end to end in tests/test_train_e2e.py, test_ppo.py and test_final_selection.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from rft_cli.config import load_run_config
from rft_cli.errors import TrainingError
from rft_cli.run_folder import checkpoints as ckpt
from rft_cli.run_folder.metrics import JsonlMetricsLogger, read_metrics, reconcile_metrics
from rft_cli.training.context import RunContext
from rft_cli.training.stage_loop import StageLoop, StageProgress, latest_checkpoint, run_steps

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-test.yaml"
STAGES = ["sft", "ppo", "grpo", "rloo"]
RL_STAGES = ["ppo", "grpo", "rloo"]
# a GRPO/RLOO step of ours is 2 TRL optimizer steps: 8 completions in minibatches of 4
BATCH = ["rl.prompts_per_step=4", "rl.samples_per_prompt=2", "rl.mini_batch_size=4"]


@dataclass
class Script:
    """What the scripted steps do: which are numerical faults, what each evaluation scores, and
    after which step's metrics line Ctrl-C is pressed."""

    faults: set[int] = field(default_factory=set)
    scores: dict[int, float] = field(default_factory=dict)
    interrupt_at: int | None = None


class Stage:
    """One stage of a run folder under test: `run(script)` trains it (or resumes it) to its end."""

    def __init__(self, tmp_path: Path, name: str, *sets: str):
        self.name, self.stage = name, "sft" if name == "sft" else "rl"
        algorithm = name if name in ("grpo", "rloo") else "ppo"
        self.config = load_run_config(
            RECIPE,
            [
                "rl.steps=4",
                "sft.max_steps=4",
                "save_interval=2",
                "keep_checkpoints=5",
                "eval.interval=2",
                f"rl.algorithm={algorithm}",
                *BATCH,
                *sets,
            ],
        )
        self.run_dir = tmp_path / "run"
        self.run_dir.mkdir(exist_ok=True)
        self.ctx: RunContext | None = None
        self.committed: dict[int, dict] = {}  # each checkpoint's marker, read as it was committed
        self.on_disk: list[list[int]] = []  # the steps on disk after each commit (and its pruning)

    @property
    def steps(self) -> int:
        return self.config.rl.steps if self.stage == "rl" else self.config.sft.max_steps

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    def lines(self) -> list[dict]:
        return read_metrics(self.run_dir / "metrics.jsonl")

    @property
    def prefix(self) -> str:
        return "sft-step-" if self.stage == "sft" else "step-"

    def saved_steps(self) -> list[int]:
        """The steps whose checkpoints are on disk now."""
        found = [p.name[len(self.prefix) :] for p in self.checkpoints.glob(f"{self.prefix}*")]
        return sorted(
            int(n) for n in found if ckpt.is_complete(self.checkpoints / f"{self.prefix}{n}")
        )

    def kept(self, *steps: int) -> list[int]:
        """Of these saved steps, those still on disk: RL keeps them all here
        (keep_checkpoints=5), the warm-up its latest alone."""
        return list(steps) if self.stage == "rl" else list(steps[-1:])

    def _record_commits(self, loop: StageLoop) -> None:
        prune = loop.saved

        def saved() -> None:
            meta = ckpt.read_meta(latest_checkpoint(self.checkpoints, self.prefix))
            self.committed[meta["step"]] = meta
            prune()
            self.on_disk.append(self.saved_steps())

        loop.saved = saved  # type: ignore[method-assign]

    def run(self, script: Script) -> None:
        """Train the stage from its latest checkpoint (as `--resume` does: later lines dropped)."""
        prefix = "sft-step-" if self.stage == "sft" else "step-"
        resumed = latest_checkpoint(self.checkpoints, prefix)
        start = ckpt.read_meta(resumed)["step"] if resumed else 0
        reconcile_metrics(self.run_dir / "metrics.jsonl", self.stage if resumed else None, start)
        self.ctx = self._context(script)
        try:
            if self.name == "ppo":
                self._run_ppo(script, resumed)
            else:
                self._run_trl(script, start)
        finally:
            self.ctx.logger.close()

    def _context(self, script: Script) -> RunContext:
        ctx = RunContext(
            self.config,
            self.run_dir,
            [],
            [{"messages": [{"role": "user", "content": "1+1="}], "answer": "2"}],
            None,
            JsonlMetricsLogger(self.run_dir / "metrics.jsonl"),
        )

        def press_ctrl_c(record: dict) -> None:
            if record["step"] == script.interrupt_at:
                ctx.interrupt.requested = True

        ctx.progress = press_ctrl_c
        return ctx

    def _evaluate(self, script: Script):
        def evaluate(model, step: int) -> dict[str, float]:
            score = script.scores.get(step, 0.5)
            return {"valid_reward_mean": score, "valid_accuracy": score}

        return evaluate

    # -- PPO: its own driver, the counters in its checkpoint's trainer state ------------------------

    def _run_ppo(self, script: Script, resumed: Path | None) -> None:
        progress = StageProgress()
        if resumed is not None:
            progress = StageProgress(**json.loads((resumed / "trainer_state.json").read_text()))
        loop = StageLoop(self.ctx, "rl", self.steps, progress, self._evaluate(script))
        self._record_commits(loop)

        def step(n: int) -> dict:
            record = {"stage": "rl", "step": n, "policy_loss": 0.1, "kl": 0.01}
            return {**record, "skipped": "non-finite loss"} if n in script.faults else record

        def write(tmp: Path) -> None:
            (tmp / "trainer_state.json").write_text(json.dumps(asdict(loop.progress)))

        run_steps(loop, step, lambda n: loop.write_checkpoint(n, write))

    # -- SFT, GRPO, RLOO: TRL's loop and our callback ------------------------------------------------

    def _run_trl(self, script: Script, start: int) -> None:
        from rft_cli.training.trl_bridge import optimizer_steps_per_batch, trl_callback_class

        per = 1 if self.stage == "sft" else optimizer_steps_per_batch(self.config.rl)
        work = self.checkpoints / ".trl"
        prefix = "sft-step-" if self.stage == "sft" else "step-"
        evaluate = self._evaluate(script) if self.stage == "rl" else None
        callback = trl_callback_class()(
            self.ctx, self.stage, prefix, work, evaluate=evaluate, steps_per_record=per
        )
        self._record_commits(callback.loop)
        if self.stage == "rl" and callback.loop.stopped_before():  # as run_trl_rl
            return
        _trl_train(self.config, callback, per, self.steps, start, script, self.stage)
        if self.ctx.interrupt.requested:  # as run_sft and run_trl_rl
            raise KeyboardInterrupt
        if self.stage == "sft":  # run_sft writes the warm-up's last line with its evaluation
            self.ctx.report(callback.final_record)
        else:
            callback.loop.finish()


def _trl_train(config, callback, per: int, steps: int, start: int, script: Script, stage: str):
    """TRL's training loop as far as callbacks see it (`Trainer._inner_training_loop` and
    `_maybe_log_save_evaluate`): DefaultFlowCallback first, then ours, through CallbackHandler."""
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback

    work = callback.work_dir
    args = TrainingArguments(
        output_dir=str(work),
        max_steps=steps * per,
        logging_steps=per,
        save_strategy="steps",
        save_steps=config.save_interval * per,
        report_to="none",
        use_cpu=True,
    )
    handler = CallbackHandler([DefaultFlowCallback(), callback], None, None, None, None)
    state = TrainerState(
        max_steps=args.max_steps,
        logging_steps=args.logging_steps,
        save_steps=args.save_steps,
        global_step=start * per,
    )
    control = handler.on_train_begin(args, state, TrainerControl())
    while state.global_step < state.max_steps:
        state.global_step += 1
        control = handler.on_step_end(args, state, control)
        if control.should_log:
            step = state.global_step // per
            faulty = step in script.faults
            logs = {"loss": float("nan") if faulty else 0.5, "grad_norm": 1.0, "learning_rate": 0.1}
            if stage == "rl":
                logs["reward"] = 0.25
            control = handler.on_log(args, state, control, logs)
        if control.should_save:
            folder = work / f"checkpoint-{state.global_step}"
            folder.mkdir(parents=True)
            state.save_to_json(str(folder / "trainer_state.json"))
            control = handler.on_save(args, state, control)
        if control.should_training_stop:
            break


def _stage(tmp_path, name: str, *sets: str) -> Stage:
    return Stage(tmp_path, name, *sets)


# -- every stage ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STAGES)
def test_each_step_writes_one_line_with_its_clocks_and_evaluations(tmp_path, name):
    stage = _stage(tmp_path, name)
    stage.run(Script(scores={2: 0.4, 4: 0.6}))
    lines = stage.lines()
    assert [(r["stage"], r["step"]) for r in lines] == [(stage.stage, n) for n in (1, 2, 3, 4)]
    clocks = [r["stage_elapsed_s"] for r in lines]
    assert clocks == sorted(clocks) and all(r["elapsed_s"] >= r["stage_elapsed_s"] for r in lines)
    evaluated = {r["step"]: r["valid_reward_mean"] for r in lines if "valid_reward_mean" in r}
    if stage.stage == "rl":  # at eval.interval and the last step
        assert evaluated == {2: 0.4, 4: 0.6}
        assert all(
            "eval_s" in r and "valid_best_reward_mean" in r for r in lines if r["step"] in evaluated
        )
    else:  # the warm-up is evaluated once, after its last step (run_sft)
        assert evaluated == {}


@pytest.mark.parametrize("name", STAGES)
def test_checkpoints_are_named_by_stage_and_marked_with_their_own_step_and_score(tmp_path, name):
    """A GRPO/RLOO checkpoint used to carry the last evaluation's score, whichever step made it:
    step 3 (not evaluated) claimed step 2's 0.9, so rl.final: best could hand back step 3."""
    stage = _stage(tmp_path, name, "save_interval=1", "eval.interval=2")
    stage.run(Script(scores={2: 0.9, 4: 0.1}))
    assert sorted(stage.committed) == [1, 2, 3, 4]
    assert stage.saved_steps() == stage.kept(1, 2, 3, 4)
    metas = stage.committed
    assert all(m["stage"] == stage.stage and m["step"] == n for n, m in metas.items())
    scores = {n: m["valid_reward_mean"] for n, m in metas.items()}
    assert scores == (
        {1: None, 2: 0.9, 3: None, 4: 0.1} if stage.stage == "rl" else dict.fromkeys(metas)
    )
    lines = {r["step"]: r for r in stage.lines()}
    assert all(
        m["stage_elapsed_s"] == lines[n]["stage_elapsed_s"] for n, m in metas.items() if n < 4
    )
    assert all(m["numerical_faults"] == 0 for m in metas.values())


def test_the_warm_up_keeps_only_its_latest_checkpoint(tmp_path):
    """The warm-up used to keep every step checkpoint until it ended: 125 of them in
    recipes/lookup-cpu.yaml, each with its optimizer state (for a full fine-tune of a 0.5B model,
    about 6 GB each). A resume needs only the latest, and none of them is evaluated."""
    stage = _stage(tmp_path, "sft", "save_interval=1")
    with pytest.raises(KeyboardInterrupt):
        stage.run(Script(interrupt_at=2))
    stage.run(Script())
    assert stage.on_disk == [[1], [2], [3], [4]]
    assert [r["step"] for r in stage.lines()] == [1, 2, 3, 4]


@pytest.mark.parametrize("name", RL_STAGES)
def test_rl_keeps_the_best_checkpoints_and_the_latest(tmp_path, name):
    stage = _stage(tmp_path, name, "save_interval=1", "eval.interval=1", "keep_checkpoints=1")
    stage.run(Script(scores={1: 0.3, 2: 0.9, 3: 0.5, 4: 0.4}))
    assert stage.saved_steps() == [2, 4]


@pytest.mark.parametrize("name", STAGES)
def test_ctrl_c_saves_that_step_and_stops(tmp_path, name):
    stage = _stage(tmp_path, name)
    with pytest.raises(KeyboardInterrupt):
        stage.run(Script(interrupt_at=3))
    assert stage.saved_steps() == stage.kept(2, 3)
    assert [r["step"] for r in stage.lines()] == [1, 2, 3]
    stage.run(Script())
    assert [r["step"] for r in stage.lines()] == [1, 2, 3, 4]
    assert stage.saved_steps()[-1] == 4


@pytest.mark.parametrize("name", STAGES)
def test_the_stage_clock_continues_across_a_resume(tmp_path, name):
    stage = _stage(tmp_path, name)
    with pytest.raises(KeyboardInterrupt):
        stage.run(Script(interrupt_at=2))
    before = stage.lines()[-1]["stage_elapsed_s"]
    stage.run(Script())
    after = [r["stage_elapsed_s"] for r in stage.lines()[2:]]
    assert all(t >= before for t in after) and after == sorted(after)


@pytest.mark.parametrize("name", STAGES)
def test_numerical_faults_stop_the_stage_at_its_own_budget(tmp_path, name):
    """The warm-up used to stop at rl.max_numerical_faults: here the other stage's budget is 1,
    so a stage that read it would stop at its first fault."""
    own, other = ("sft", "rl") if name == "sft" else ("rl", "sft")
    stage = _stage(
        tmp_path,
        name,
        "save_interval=1",
        f"{own}.max_numerical_faults=2",
        f"{other}.max_numerical_faults=1",
    )
    with pytest.raises(
        TrainingError, match=f"{own} step 3: stopped after 2 numerical faults"
    ) as raised:
        stage.run(Script(faults={2, 3}))
    prefix = "sft-step-" if own == "sft" else "step-"
    assert f"the last good checkpoint is {stage.checkpoints / f'{prefix}2'}" in str(raised.value)
    assert [r["step"] for r in stage.lines()] == [1, 2, 3]  # the faulty step's line is written
    assert stage.saved_steps() == stage.kept(1, 2)
    assert ckpt.read_meta(stage.checkpoints / f"{prefix}2")["numerical_faults"] == 1


@pytest.mark.parametrize("name", STAGES)
def test_the_fault_count_survives_a_resume(tmp_path, name):
    """GRPO/RLOO and the warm-up used to count from 0 again after --resume: each resume gave a
    fresh allowance, so a run that faults every few steps never stopped."""
    own = "sft" if name == "sft" else "rl"
    stage = _stage(tmp_path, name, f"{own}.max_numerical_faults=2")
    with pytest.raises(KeyboardInterrupt):
        stage.run(Script(faults={2}, interrupt_at=3))
    with pytest.raises(TrainingError, match=f"{own} step 4: stopped after 2 numerical faults"):
        stage.run(Script(faults={4}))


# -- RL: validation steers the stage -----------------------------------------------------------------


@pytest.mark.parametrize("name", RL_STAGES)
def test_a_new_best_between_saves_is_saved(tmp_path, name):
    """Under rl.final: best a step that beats every saved score is saved (GRPO/RLOO used to save
    only at save_interval, so final/ could never be that step)."""
    stage = _stage(tmp_path, name, "save_interval=10", "eval.interval=1")
    stage.run(Script(scores={1: 0.2, 2: 0.8, 3: 0.5, 4: 0.3}))
    assert stage.saved_steps() == [1, 2, 4]  # new bests, then the last step


@pytest.mark.parametrize("name", RL_STAGES)
def test_an_early_stop_saves_ends_the_stage_and_a_resume_stops_again(tmp_path, name):
    """GRPO/RLOO used to train on after resuming a run that had stopped early."""
    stage = _stage(tmp_path, name, "rl.steps=6", "eval.interval=1")
    scores = {1: 0.9, 2: 0.7, 3: 0.7, 4: 0.9, 5: 0.9, 6: 0.9}
    stage.run(Script(scores=scores))
    assert stage.ctx.early_stop["step"] == 3 and stage.saved_steps()[-1] == 3
    assert [r["step"] for r in stage.lines()] == [1, 2, 3]
    stage.run(Script(scores=scores))
    assert stage.ctx.early_stop["step"] == 3 and [r["step"] for r in stage.lines()] == [1, 2, 3]


@pytest.mark.parametrize("name", RL_STAGES)
def test_a_regression_at_the_last_step_is_a_normal_finish(tmp_path, name):
    """PPO used to note an early stop when the watch fired at the last step, which it reached anyway."""
    stage = _stage(tmp_path, name, "rl.steps=3", "eval.interval=1")
    stage.run(Script(scores={1: 0.9, 2: 0.7, 3: 0.7}))
    assert stage.ctx.early_stop is None and [r["step"] for r in stage.lines()] == [1, 2, 3]
