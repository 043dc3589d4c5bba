"""OpenAI's `python` grader: `grade(sample, item) -> float` run in the sandboxed worker pool."""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Sequence
from typing import Any

from rft_cli.errors import GraderError
from rft_cli.graders.base import Grader, GradeResult, as_sample, checked, failed
from rft_cli.graders.sandbox import SandboxPool
from rft_cli.graders.specs import PythonSpec
from rft_cli.graders.templates import UNPARSABLE, parse_json


def check_source(source: str, where: str) -> ast.FunctionDef:
    """Refuse source that does not parse or defines no top-level `grade` with exactly two arguments."""
    try:
        tree = ast.parse(source, "<grader>")
    except SyntaxError as exc:
        raise GraderError(f"{where}: syntax error at line {exc.lineno}: {exc.msg}") from None
    check_imports(tree, where)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "grade":
            args = node.args
            count = len(args.posonlyargs) + len(args.args)
            if count != 2 or args.vararg or args.kwarg or args.kwonlyargs:
                raise GraderError(
                    f"{where}: grade() must take exactly two arguments, grade(sample, item)"
                )
            return node
    raise GraderError(f"{where}: defines no top-level function grade(sample, item) -> float")


# Import names whose pip package is named differently (OpenAI's grader image offers these).
PIP_NAMES = {
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "rouge_score": "rouge-score",
    "skbio": "scikit-bio",
    "ast_grep_py": "ast-grep-py",
    "PIL": "pillow",
    "cv2": "opencv-python",
}
_MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")


def install_hint(module: str) -> str:
    """How to make `module` importable in the sandbox (the workers run this Python, in isolated mode)."""
    top = module.split(".")[0]
    package = PIP_NAMES.get(top, top)
    return (
        f"the package {package} (import {top}) is not installed in the Python that runs rft and its grader "
        f"workers; install it with `{sys.executable} -m pip install {package}`"
    )


def with_install_hint(detail: str) -> str:
    """A worker's error detail, plus how to install the module when it is a failed import."""
    match = _MISSING_MODULE.search(detail or "")
    return f"{detail} ({install_hint(match.group(1))})" if match else detail


def check_imports(tree: ast.Module, where: str) -> None:
    """Refuse module-level imports (outside try blocks) of packages this Python does not have."""
    for node in tree.body:
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else (
                [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and not node.level
                else []
            )
        )
        for name in names:
            top = name.split(".")[0]
            if not _installed(top):
                raise GraderError(
                    f"{where}: line {node.lineno} imports {top}, but {install_hint(top)}"
                )


def _installed(top: str) -> bool:
    """True when `import top` can work here: a module already loaded (`__main__`, whose spec may be
    None and made find_spec raise ValueError), a built-in, or one the import system can find."""
    import importlib.util

    if top in sys.modules or top in sys.builtin_module_names:
        return True
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return True  # the worker's own import says what is wrong


def item_keys(function: ast.FunctionDef) -> set[str]:
    """Item fields the code requires literally, `item["x"]` (best effort; `item.get` is optional)."""
    params = [*function.args.posonlyargs, *function.args.args]
    item = params[1].arg
    keys = set()
    for node in ast.walk(function):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id == item
        ):
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                keys.add(node.slice.value)
    return keys


class PythonGrader(Grader):
    """Run the user's `grade(sample, item)` in a pool of contained worker processes.

    An exception, timeout, crash, non-number, NaN or value outside [0, 1] (beyond float rounding,
    see `clamp_reward`) scores 0 and is counted by kind (python_grader_runtime_error, _timeout,
    _crash, _not_a_number, _nan, _out_of_range, _memory_error, _startup_error, _input_error).
    Workers start on first use; `close()` stops them.

    >>> g = PythonGrader(PythonSpec(type="python", source="def grade(sample, item):\\n    return 1.0"))
    >>> g.grade("x", {}).reward
    1.0
    >>> g.close()
    """

    def __init__(self, spec: PythonSpec, where: str = "") -> None:
        function = check_source(spec.source, f"{where}.source" if where else "source")
        self._item_keys = item_keys(function)
        self.spec = spec
        self.name = spec.name or "python"
        self.pass_threshold = spec.pass_threshold
        self._pool: Any = None

    @property
    def pool(self) -> Any:
        if self._pool is None:
            self._pool = SandboxPool(
                self.spec.source, self.spec.timeout, self.spec.memory_mb, self.spec.workers
            )
        return self._pool

    def _grade(self, sample: Any, item: dict[str, Any]) -> GradeResult:
        return self._grade_batch([sample], [item])[0]

    def _grade_batch(
        self, samples: Sequence[Any], items: Sequence[dict[str, Any]]
    ) -> list[GradeResult]:
        payloads = [
            {"sample": _sample_payload(s), "item": i} for s, i in zip(samples, items, strict=True)
        ]
        results = []
        for outcome in self.pool.run(payloads):
            if outcome.error is None:
                results.append(checked(GradeResult(float(outcome.value))))
            else:
                results.append(checked(failed(outcome.error, with_install_hint(outcome.detail))))
        return results

    def item_fields(self) -> set[str]:
        """Fields read as item["x"] (item.get("x") is optional, so not listed)."""
        return set(self._item_keys)

    def sandbox_layers(self) -> list[str]:
        """The containment layers the workers applied (after the first grade)."""
        return list(self.pool.layers)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pool"] = None
        return state


def _sample_payload(sample: Any) -> dict[str, Any]:
    """The sample dict the user's code sees: output_text, and output_json when the text is JSON
    (None when it is not, or is nested past the parser's limit), parsed as templates parse it."""
    sample = dict(as_sample(sample))
    if "output_json" not in sample:
        parsed = parse_json(sample.get("output_text", ""))
        sample["output_json"] = None if parsed is UNPARSABLE else parsed
    return sample
