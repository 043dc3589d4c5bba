"""Coverage-guided fuzzing of rft's input loaders with atheris (optional; CI does not run it).

    pip install atheris
    python tests/fuzz/fuzz_loaders.py -atheris_runs=20000            # all targets, by first byte
    python tests/fuzz/fuzz_loaders.py -max_total_time=600 tests/corpus/grader   # seeded from the corpus

The first byte picks the target; the rest is the file (or flag value) given to `rft`:
    0 validate FILE      1 train FILE --dry-run     2 grade FILE (YAML)     3 grade FILE (JSON)
    4 train --set TEXT   5 grade --item TEXT
Any outcome other than exit 0/1/2 with no traceback is a crash: atheris saves the input as
crash-<hash>; copy it into tests/corpus/<target>/ so the corpus tests of tests/test_cli_app.py replays it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["rft_cli", "yaml", "json"]):
    import yaml  # noqa: F401  (imported lazily by rft; imported here so that it is instrumented)
    from typer.testing import CliRunner

    import rft_cli.config  # noqa: F401
    import rft_cli.data.validation  # noqa: F401
    import rft_cli.graders.build  # noqa: F401
    from rft_cli.cli import app
RECIPE = str(ROOT / "recipes" / "tiny-test.yaml")
GRADER = str(ROOT / "data" / "example" / "grader.yaml")
RUNNER = CliRunner()
WORK = Path(tempfile.mkdtemp(prefix="rft-fuzz-"))


def _args(target: int, body: bytes) -> list[str]:
    text = body.decode("utf-8", errors="replace").replace("\0", "")
    if target == 4:
        return ["train", RECIPE, "--dry-run", "--set", text]
    if target == 5:
        return ["grade", GRADER, "--item", text, "--sample", "x"]
    path = WORK / ("input.json" if target == 3 else "input.yaml" if target in (1, 2) else "input.jsonl")
    path.write_bytes(body)
    return {0: ["validate", str(path)], 1: ["train", str(path), "--dry-run"],
            2: ["grade", str(path), "--item", "{}", "--sample", "x"], 3: ["grade", str(path), "--item", "{}", "--sample", "x"]}[target]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    result = RUNNER.invoke(app, _args(data[0] % 6, data[1:]))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    if result.exit_code not in (0, 1, 2) or "Traceback" in result.output:
        raise RuntimeError(f"exit {result.exit_code}: {result.output[-500:]}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
