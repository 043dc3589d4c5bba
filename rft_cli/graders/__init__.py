"""Graders: turn a model's answer into a reward in [0, 1].

Public API (stable; training and evaluation build on it):
    load_grader(path) -> Grader            # YAML or JSON file, OpenAI grader schema
    opened_grader(grader) -> a context of a Grader: a Grader as is, or a path loaded and closed after
    build_grader(spec: dict) -> Grader     # the same from a dict (inline grader in a recipe)
    Grader.grade(sample, item) -> GradeResult
    Grader.grade_batch(samples, items) -> list[GradeResult]
    Grader.item_fields() -> set[str]       # top-level `item.<field>` names its templates use
    Grader.close()                         # stop worker processes (python graders)
    reward_function(grader) -> TRL reward function (prompts, completions, **columns) -> list[float]
"""

from rft_cli.graders.base import Grader, GradeResult, as_sample
from rft_cli.graders.build import (
    GRADERS,
    GraderArg,
    build_grader,
    load_grader,
    opened_grader,
    read_grader_file,
    register,
)
from rft_cli.graders.reward import RewardFunction, reward_function
from rft_cli.tool_calls import completion_text

__all__ = [
    "GRADERS",
    "GradeResult",
    "Grader",
    "GraderArg",
    "RewardFunction",
    "as_sample",
    "build_grader",
    "completion_text",
    "load_grader",
    "opened_grader",
    "read_grader_file",
    "register",
    "reward_function",
]
