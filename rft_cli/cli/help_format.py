"""`--help` that reads as Typer users expect: `--valid FILE`, `--max-errors INTEGER`, bare flags.

Typer 0.29 prints every parameter's Python type in angle brackets, flags included (`--strict
<bool>`, `--set <list[str]>`, `--valid <file>`), and wraps a required argument in braces in the
usage line (`rft validate [OPTIONS] {TRAIN}`). Earlier Typer releases, click, and every tutorial
a user has read print `--valid FILE`, `--set TEXT`, a flag with no metavar, and `TRAIN`. Typer
has no setting for this, so the app's group swaps its parameters to the two subclasses below
once the commands are built (`classic_metavars`); parsing is untouched.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperOption

# Typer's labels -> click's metavars.
_LABELS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "int range": "INTEGER", "float range": "FLOAT",
           "file": "FILE", "dir": "DIRECTORY", "path": "PATH", "bool": "BOOLEAN", "datetime": "DATETIME"}


def _classic(label: str | None) -> str | None:
    """`<list[str]>` -> `TEXT`, `<text|json>` -> `[text|json]`, `<file>` -> `FILE`."""
    if not label:
        return label
    inner = label.removeprefix("<").removesuffix(">")
    if inner.startswith("list[") and inner.endswith("]"):
        inner = inner[5:-1]
    if inner in _LABELS:
        return _LABELS[inner]
    return f"[{inner}]" if "|" in inner else inner.upper()


class ClassicOption(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar
        return "" if self.is_flag else _classic(self.display_type(ctx))


class ClassicArgument(TyperArgument):
    @property
    def display_name_raw(self) -> str:  # click names an argument in capitals: RUNS..., not runs...
        return self.metavar if self.metavar is not None else (self.name or "").upper()

    def display_type_rich(self, ctx: Any) -> str | None:
        return _classic(self.display_type(ctx))

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


def _classic_param(param: Any) -> Any:
    if type(param) is TyperOption:
        param.__class__ = ClassicOption
    elif type(param) is TyperArgument:
        param.__class__ = ClassicArgument
    return param


# The Typer methods the classes above override; a Typer without them (older releases printed click's
# metavars itself) is left alone.
_TYPER_HOOKS = all(hasattr(cls, name) for cls, name in ((TyperOption, "display_type"), (TyperOption, "display_type_rich"),
                                                         (TyperArgument, "_usage_display_name")))


def classic_metavars(command: Any) -> None:
    """Swap every Typer parameter of `command` and its subcommands to the classic display."""
    if not _TYPER_HOOKS:
        return
    for param in getattr(command, "params", []):
        _classic_param(param)
    if hasattr(command, "get_help_option"):
        # --help is built on first use, from the context's option names: swap it when it is.
        built = command.get_help_option
        command.get_help_option = lambda ctx: _classic_param(built(ctx))
    for sub in (getattr(command, "commands", None) or {}).values():
        classic_metavars(sub)
