"""The documentation cannot drift from the code: every `rft` command shown runs, every link lands.

Conventions these tests hold the pages to (docs/development.md, "Documentation"):

- Each ```bash block in README.md and docs/*.md whose lines call `rft` is run, line by line, in a
  scratch copy of the repository's `data/`, `recipes/` and `examples/` (the blocks of one page share
  it, in page order, so a tour can train and then evaluate). Lines that do not start with `rft`
  (pip, accelerate, python) are not run.
- A block that cannot run on shipped files (a template such as `RECIPE.yaml`, a hub model, a run
  folder that only a long job makes) is preceded by `<!-- not-run: why -->`.
- A command followed by a comment line `# {"reward": X ...}` must print that reward with --format json.
- A fenced block preceded by `<!-- file: PATH -->` must show exactly the repository file PATH.
- Links and anchors to other pages, and repository paths named in code spans, must exist.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rft_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"^<!-- not-run: (.*?) -->$")
SHOWS_FILE = re.compile(r"^<!-- file: (\S+) -->$")
REWARD = re.compile(r'^# \{"reward": ([-0-9.e]+)')
# command -> the reward its documented output shows (from the comment line after it)
DOCUMENTED_REWARDS: dict[str, float] = {}

# Commands that run elsewhere and take minutes here: the default recipe trains for ~3 minutes on
# 2 cores (tests/test_recipes.py runs it shortened).
EXCLUDED = {
    "rft train recipes/arith-cpu.yaml": "trains for minutes; test_recipes.py runs it shortened"
}
# Commands run with extra arguments that keep them to seconds; what follows them in the page
# (eval, report) then works on a real, short run folder.
SHORTENED = {
    "rft train recipes/arith-cpu.yaml --output-dir runs/arith": [
        "--set",
        "sft.max_steps=3",
        "--set",
        "rl.steps=2",
        "--set",
        "eval.samples=8",
        "--set",
        "eval.interval=1",
    ],
}
TOUR_EVAL = (
    "rft eval --model runs/arith --data data/arith/valid.jsonl --grader data/arith/grader.yaml "
    "--max-new-tokens 64 --min-score 0.9"
)
SHORTENED[TOUR_EVAL] = ["--limit", "16"]
# Quality gates that a shortened run does not pass: the gate must answer (0 or 1), not fail to run.
EXIT_CODES = {TOUR_EVAL: {0, 1}}


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lines: list[str]
    not_run: str | None  # the marker's reason
    commands: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _fenced_blocks(page: Path) -> list[Block]:
    """Every ```bash block of a page, with the not-run marker on the line before it (if any)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            info, start = lines[i][3:].strip(), i
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
            if info == "bash":
                marker = NOT_RUN.match(lines[start - 1]) if start else None
                block = Block(
                    page, start + 1, lines[start + 1 : i], marker.group(1) if marker else None
                )
                block.commands = _rft_commands(block.lines)
                _note_rewards(block.lines)
                blocks.append(block)
        i += 1
    return blocks


def _note_rewards(lines: list[str]) -> None:
    for line, after in zip(lines, lines[1:], strict=False):
        match = REWARD.match(after)
        if match and line.startswith("rft "):
            DOCUMENTED_REWARDS[shlex.join(shlex.split(line, comments=True))] = float(match.group(1))


def _rft_commands(lines: list[str]) -> list[str]:
    """The `rft ...` commands of a shell block: continuations joined, comments dropped, `&&` split."""
    joined, current = [], ""
    for line in lines:
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            joined.append(current)
            current = ""
    commands = []
    for line in joined:
        words = shlex.split(line, comments=True)
        while words:
            end = words.index("&&") if "&&" in words else len(words)
            if words[0] == "rft":
                commands.append(shlex.join(words[:end]))
            words = words[end + 1 :]
    return commands


BLOCKS = [b for page in PAGES for b in _fenced_blocks(page)]
RUNNABLE_PAGES = sorted({b.page for b in BLOCKS if b.commands and b.not_run is None})


def _trains(page: Path) -> bool:
    return any(
        c.startswith("rft train") and "--dry-run" not in c and c not in EXCLUDED
        for b in BLOCKS
        if b.page == page and b.not_run is None
        for c in b.commands
    )


def test_marked_blocks_say_why_and_unmarked_blocks_can_run():
    """A not-run marker needs a reason; a runnable block holds no shell syntax the runner cannot run."""
    for block in BLOCKS:
        if block.not_run is not None:
            assert block.not_run.strip(), f"{block.where}: <!-- not-run: --> needs a reason"
            continue
        for command in block.commands:
            assert not set(shlex.split(command)) & {"|", "<", ">", ">>", ";"}, (
                f"{block.where}: `{command}` uses a pipe or redirection; mark the block <!-- not-run: why -->"
            )
        shell = [
            line
            for line in block.lines
            if line.lstrip().startswith("rft ") and re.search(r"\$[({A-Za-z_]|`", line)
        ]
        assert not shell, (
            f"{block.where}: `{shell[0]}` needs the shell to expand it, which the runner does not do; "
            "mark the block <!-- not-run: why -->"
        )


def test_the_runner_finds_what_it_should():
    """The parser itself: continuations, comments, `&&` and non-rft lines (a runner that found nothing
    would pass every page)."""
    lines = [
        "# a comment",
        "pip install x && rft validate a.jsonl \\",
        "    --valid b.jsonl   # note",
        "rft train r.yaml --dry-run && rft train r.yaml",
        "accelerate launch -m rft_cli train r.yaml",
    ]
    assert _rft_commands(lines) == [
        "rft validate a.jsonl --valid b.jsonl",
        "rft train r.yaml --dry-run",
        "rft train r.yaml",
    ]
    assert sum(len(b.commands) for b in BLOCKS if b.not_run is None) >= 8


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(p, marks=[pytest.mark.slow] if _trains(p) else [], id=p.name)
        for p in RUNNABLE_PAGES
    ],
)
def test_documented_commands_run(page, tmp_path, monkeypatch):
    for folder in ("data", "recipes", "examples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    ran = 0
    for block in (b for b in BLOCKS if b.page == page and b.not_run is None):
        for command in block.commands:
            if command in EXCLUDED:
                continue
            args = shlex.split(command)[1:] + SHORTENED.get(command, [])
            result = CliRunner().invoke(app, args)
            expected = EXIT_CODES.get(command, {0})
            assert result.exit_code in expected, (
                f"{block.where}: `{command}` exited {result.exit_code}, not {sorted(expected)}:\n{result.output[-3000:]}"
            )
            assert "Traceback" not in result.output, (
                f"{block.where}: `{command}`:\n{result.output[-3000:]}"
            )
            if command in DOCUMENTED_REWARDS:
                shown = json.loads(result.stdout)["reward"]
                assert shown == pytest.approx(DOCUMENTED_REWARDS[command]), (
                    f"{block.where}: `{command}` gives reward {shown}, the page says {DOCUMENTED_REWARDS[command]}"
                )
            ran += 1
    assert ran, f"{page.name}: no command ran"


def test_files_shown_in_the_docs_are_the_shipped_files():
    shown = 0
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            match = SHOWS_FILE.match(line)
            if not match:
                continue
            assert lines[number + 1].startswith("```"), (
                f"{page.name}:{number + 1}: <!-- file: --> must precede a fence"
            )
            end = next(i for i in range(number + 2, len(lines)) if lines[i].startswith("```"))
            text = "\n".join(lines[number + 2 : end]) + "\n"
            assert text == (ROOT / match.group(1)).read_text(), (
                f"{page.name}:{number + 1}: differs from {match.group(1)}"
            )
            shown += 1
    assert shown >= 8


def test_documented_rewards_are_found():
    assert (
        len(DOCUMENTED_REWARDS) >= 8
        and DOCUMENTED_REWARDS[
            "rft grade examples/graders/numeric.yaml --item '{\"reference_answer\": \"84\"}' --sample 'So the total is 85. #### 85' --format json"
        ]
        == 0.1
    )


# -- links -----------------------------------------------------------------------------------


def _slug(heading: str) -> str:
    """The anchor mkdocs (python-markdown's toc) gives a heading; GitHub's agrees on these pages."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _prose(page: Path) -> list[tuple[int, str]]:
    """The page's lines outside fenced code blocks, with their line numbers."""
    out, fenced = [], False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            out.append((number, line))
    return out


def _anchors(page: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for _, line in _prose(page) if re.match(r"#{1,6} ", line)}


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _links() -> list[tuple[Path, int, str]]:
    return [
        (page, number, target)
        for page in PAGES
        for number, line in _prose(page)
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line))
        if not re.match(r"[a-z]+:", target)
    ]


def test_internal_links_and_anchors_resolve():
    links = _links()
    assert len(links) > 20  # the pages link to each other; finding none means the pattern broke
    broken = []
    for page, number, target in links:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{page.relative_to(ROOT)}:{number}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(
                f"{page.relative_to(ROOT)}:{number}: {target} (no heading with that anchor)"
            )
    assert not broken, "\n".join(broken)


def test_the_link_check_catches_a_broken_anchor(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Title\n\n## The `run` folder\n\n```bash\n# not a heading\n```\n")
    assert _anchors(page) == {"title", "the-run-folder"}


REPO_PATH = re.compile(r"`((?:bench|data|docs|examples|recipes|rft_cli|tests)/[\w./-]+)`")
TEST_FILE = re.compile(r"`(test_\w+\.py)`")


def test_repository_paths_named_in_the_docs_exist():
    """A file or folder the prose names (`bench/validate.py`, `tests/test_sft.py`, or a test file by its
    name alone, `test_sft.py`) is still there: a renamed test must not leave the guarantees pointing
    at nothing."""
    tests = {path.name for path in (ROOT / "tests").rglob("test_*.py")}
    missing = [
        f"{page.relative_to(ROOT)}:{number}: {path}"
        for page in PAGES
        for number, line in _prose(page)
        for path in REPO_PATH.findall(line)
        if not (ROOT / path).exists()
    ]
    missing += [
        f"{page.relative_to(ROOT)}:{number}: {name}"
        for page in PAGES
        for number, line in _prose(page)
        for name in TEST_FILE.findall(line)
        if name not in tests
    ]
    assert not missing, "\n".join(missing)


def test_mkdocs_builds_strict(tmp_path):
    """The site builds offline with every page in the nav and no broken link (mkdocs is in the dev extra)."""
    pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra; pip install -e '.[dev]'")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
