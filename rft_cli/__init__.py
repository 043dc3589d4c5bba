"""rft: reinforcement fine-tuning (SFT warm-up, then PPO) for open models on your own hardware.

The functions a Python user scripts with (each one is what an `rft` command calls):

    import rft_cli

    report = rft_cli.validate_dataset("data/train.jsonl", "data/valid.jsonl")   # rft validate
    grader = rft_cli.load_grader("grader.yaml")                                  # a Grader
    result = rft_cli.train(rft_cli.load_run_config("recipe.yaml"), output_dir="runs/x")  # rft train
    run = rft_cli.evaluate_models("data/test.jsonl", "grader.yaml", ["runs/x"])  # rft eval
    summary = rft_cli.summarize_run("runs/x")                                    # rft report

What they return and raise is exported too (`rft_cli.ValidationReport`, `rft_cli.EvalRun`,
`rft_cli.DataError`, ...), so a script can annotate with and catch them without knowing modules.
Everything is imported on first use (module `__getattr__`), so `import rft_cli` and `rft --help`
do not load torch, transformers or the graders.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it
_API = {
    "validate_dataset": "rft_cli.data.validation",
    "load_grader": "rft_cli.graders",
    "grade_file": "rft_cli.samples_file",
    "load_run_config": "rft_cli.config",
    "train": "rft_cli.training.run",
    "evaluate": "rft_cli.evaluation",
    "evaluate_models": "rft_cli.evaluation",
    "summarize_run": "rft_cli.run_folder.summary",
    "read_metrics": "rft_cli.run_folder.metrics",
    # what they return
    "ValidationReport": "rft_cli.data.validation_report",
    "Issue": "rft_cli.data.validation_report",
    "SelfTestReport": "rft_cli.graders.selftest",
    "Grader": "rft_cli.graders.base",
    "GradeResult": "rft_cli.graders.base",
    "GraderArg": "rft_cli.graders.build",
    "GradeFileReport": "rft_cli.samples_file",
    "RunConfig": "rft_cli.config",
    "TrainResult": "rft_cli.training.run",
    "EvalReport": "rft_cli.evaluation",
    "EvalRun": "rft_cli.evaluation",
    "SampleResult": "rft_cli.evaluation",
    "RunReport": "rft_cli.run_folder.summary",
    # what they raise (exc.exit_code is the exit code of `rft`)
    "RftError": "rft_cli.errors",
    "DataError": "rft_cli.errors",
    "ConfigError": "rft_cli.errors",
    "GraderError": "rft_cli.errors",
    "TrainingError": "rft_cli.errors",
}

__all__ = [
    "ConfigError",
    "DataError",
    "EvalReport",
    "EvalRun",
    "GradeFileReport",
    "GradeResult",
    "Grader",
    "GraderArg",
    "GraderError",
    "Issue",
    "RftError",
    "RunConfig",
    "RunReport",
    "SampleResult",
    "SelfTestReport",
    "TrainResult",
    "TrainingError",
    "ValidationReport",
    "__version__",
    "evaluate",
    "evaluate_models",
    "grade_file",
    "load_grader",
    "load_run_config",
    "read_metrics",
    "summarize_run",
    "train",
    "validate_dataset",
]

if TYPE_CHECKING:  # for type checkers and editors; at run time the names load lazily
    from rft_cli.config import RunConfig, load_run_config
    from rft_cli.data.validation import validate_dataset
    from rft_cli.data.validation_report import Issue, ValidationReport
    from rft_cli.errors import ConfigError, DataError, GraderError, RftError, TrainingError
    from rft_cli.evaluation import EvalReport, EvalRun, SampleResult, evaluate, evaluate_models
    from rft_cli.graders import load_grader
    from rft_cli.graders.base import Grader, GradeResult
    from rft_cli.graders.build import GraderArg
    from rft_cli.graders.selftest import SelfTestReport
    from rft_cli.run_folder.metrics import read_metrics
    from rft_cli.run_folder.summary import RunReport, summarize_run
    from rft_cli.samples_file import GradeFileReport, grade_file
    from rft_cli.training.run import TrainResult, train


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'rft_cli' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
