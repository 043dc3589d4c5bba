"""Generate the reference parts of docs/ from the code, so they cannot drift from it.

    python -m rft_cli.cli.docs_gen            # rewrite the generated blocks in docs/
    python -m rft_cli.cli.docs_gen --check    # exit 1 when a block is out of date (tests do this)

Two blocks: the config reference in docs/training.md, rendered from the pydantic models of
`rft_cli.config` (each field's type, default, `doc` and `source`), and the command reference in
docs/cli.md, the `--help` text of every command. A block sits between two HTML comments,
`<!-- generated: NAME ... -->` and `<!-- end generated: NAME -->`; the text around it is
written by hand.
"""

from __future__ import annotations

import re
import sys
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from rft_cli.config import RunConfig

DOCS_DIR = Path(__file__).resolve().parents[2] / "docs"
HELP_WIDTH = 100  # columns the --help texts are rendered at

# -- the config reference --------------------------------------------------------------------

_TYPE_NAMES = {int: "integer", float: "number", bool: "boolean", str: "string", Path: "path"}


def _type_name(annotation: Any) -> str:
    """A reader's name for a field type: `integer`, `one of a, b`, `list of strings`, ..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names)
    if origin is list:
        return f"list of {_type_name(args[0])}s"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds(field: FieldInfo) -> str:
    """The field's range as `>= 1`, `> 0, < 1`, ... (empty when it has none)."""
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = [
        f"{sign} {_yaml_value(getattr(m, attr))}"
        for m in field.metadata
        for attr, sign in signs.items()
        if getattr(m, attr, None) is not None
    ]
    return ", ".join(parts)


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value >= 2**16 and value & (value - 1) == 0:
        return f"2^{value.bit_length() - 1}"  # 2^32 reads better than 4294967296
    if isinstance(value, float) and value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    return str(value)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    return "unset" if value is None else f"`{_yaml_value(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    """One table row per field of `model`, nested settings (model.lora) following their parent."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        kind = _type_name(field.annotation)
        bounds = _bounds(field)
        kind = f"{kind} ({bounds})" if bounds else kind
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        cells = [
            f"`{key}`",
            kind,
            _default(field),
            field.description or "",
            str(extra.get("default_source", "")),
        ]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        rows += [
            r
            for arg in typing.get_args(field.annotation) or (field.annotation,)
            if isinstance(arg, type) and issubclass(arg, BaseModel)
            for r in _rows(arg, f"{key}.")
        ]
    return rows


def _sections(
    config: type[BaseModel],
) -> list[tuple[str, type[BaseModel] | None, FieldInfo | None]]:
    """The top-level keys first (as one table), then one table per settings section."""
    sections: list[tuple[str, type[BaseModel] | None, FieldInfo | None]] = [
        ("top level", None, None)
    ]
    for name, field in config.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            sections.append((name, field.annotation, field))
        elif typing.get_origin(field.annotation) is list:  # a list of settings (tools): its keys
            (item,) = typing.get_args(field.annotation)
            if isinstance(item, type) and issubclass(item, BaseModel):
                sections.append((name, item, field))
    return sections


def config_reference(config: type[BaseModel] = RunConfig) -> str:
    """The config reference tables, rendered from the models' fields."""
    header = [
        "| key | type | default | what it does | where the default comes from |",
        "| --- | --- | --- | --- | --- |",
    ]
    out = []
    for name, model, field in _sections(config):
        if model is None:
            top = [
                n
                for n, f in config.model_fields.items()
                if not (isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel))
            ]
            rows = [r for r in _rows(config, "") if r.split("`")[1] in top]
            out += ["### Top-level keys", "", *header, *rows, ""]
        else:
            out += [
                f"### `{name}`",
                "",
                (field.description if field is not None else None) or "",
                "",
                *header,
                *_rows(model, f"{name}."),
                "",
            ]
    return "\n".join(out).rstrip("\n")


# -- the command reference -------------------------------------------------------------------


def _command_paths() -> list[list[str]]:
    """Every command and group of the app, depth first, in the order `rft --help` lists them."""
    import typer.main

    from rft_cli.cli import app

    def walk(group: Any, path: list[str]) -> list[list[str]]:
        paths = [path]
        for name, command in getattr(group, "commands", {}).items():
            if not getattr(command, "hidden", False):
                paths += walk(command, [*path, name])
        return paths

    return walk(typer.main.get_command(app), [])


def command_help(path: list[str]) -> str:
    """`rft PATH --help` as a user sees it in a terminal HELP_WIDTH columns wide, without colour."""
    from typer import rich_utils
    from typer.testing import CliRunner

    from rft_cli.cli import app

    # Typer reads TERMINAL_WIDTH and FORCE_COLOR/GITHUB_ACTIONS once, at import: pin what they
    # decide, so the text is the same on a laptop and in CI.
    saved = rich_utils.MAX_WIDTH, rich_utils.FORCE_TERMINAL
    rich_utils.MAX_WIDTH, rich_utils.FORCE_TERMINAL = HELP_WIDTH, False
    try:
        result = CliRunner().invoke(
            app, [*path, "--help"], prog_name="rft", env={"NO_COLOR": "1"}, color=False
        )
    finally:
        rich_utils.MAX_WIDTH, rich_utils.FORCE_TERMINAL = saved
    if result.exit_code != 0:
        raise RuntimeError(
            f"rft {' '.join(path)} --help exited {result.exit_code}: {result.output}"
        )
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.output)
    return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n")


def cli_reference() -> str:
    """One section per command with its `--help` text."""
    out = []
    for path in _command_paths():
        title = " ".join(["rft", *path])
        out += [f"### `{title}`", "", "```text", command_help(path), "```", ""]
    return "\n".join(out).rstrip("\n")


# -- the blocks in docs/ ---------------------------------------------------------------------

BLOCKS = {
    "config-reference": ("training.md", config_reference),
    "cli-reference": ("cli.md", cli_reference),
}


def _block_re(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- generated: {name}\b[^>]*-->\n)(.*?)(<!-- end generated: {name} -->)", re.S
    )


def render_block(text: str, name: str, content: str) -> str:
    """`text` with block `name` replaced by `content`; raises LookupError when the markers are missing."""
    pattern = _block_re(name)
    if not pattern.search(text):
        raise LookupError(f"no <!-- generated: {name} --> ... <!-- end generated: {name} --> block")
    return pattern.sub(lambda m: m.group(1) + content + "\n" + m.group(3), text, count=1)


def stale_blocks(docs_dir: Path = DOCS_DIR, write: bool = False) -> list[str]:
    """The blocks whose text differs from what the code renders now (rewritten when `write`)."""
    stale = []
    for name, (page, render) in BLOCKS.items():
        path = docs_dir / page
        text = path.read_text(encoding="utf-8")
        new = render_block(text, name, render())
        if new != text:
            stale.append(f"{path}: {name}")
            if write:
                path.write_text(new, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    check = "--check" in argv
    stale = stale_blocks(write=not check)
    for item in stale:
        print(("out of date: " if check else "rewrote: ") + item, file=sys.stderr)
    if check and stale:
        print("run: python -m rft_cli.cli.docs_gen", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
