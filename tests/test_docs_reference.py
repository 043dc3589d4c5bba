"""The generated reference in docs/ (config keys, `--help` texts) matches the code it comes from."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from rft_cli.cli import docs_gen
from rft_cli.config import RLSettings, RunConfig


def test_generated_blocks_are_current():
    stale = docs_gen.stale_blocks(write=False)
    assert not stale, f"out of date: {stale}; run `python -m rft_cli.cli.docs_gen` and commit docs/"


def test_a_changed_field_makes_the_page_stale(monkeypatch):
    """The check above can fail: a description or a default changed in config.py shows up."""
    page = (docs_gen.DOCS_DIR / "training.md").read_text()
    assert docs_gen.render_block(page, "config-reference", docs_gen.config_reference()) == page
    monkeypatch.setattr(RLSettings.model_fields["kl_coef"], "description", "Something else.")
    assert "Something else." in docs_gen.config_reference()
    assert docs_gen.render_block(page, "config-reference", docs_gen.config_reference()) != page


def _fields(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field
        for arg in typing.get_args(field.annotation) or (field.annotation,):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                yield from _fields(arg, f"{prefix}{name}.")


def test_every_config_key_is_documented_and_listed():
    reference = docs_gen.config_reference()
    keys = list(_fields(RunConfig))
    assert len(keys) > 80
    undocumented = [key for key, field in keys if not field.description]
    assert not undocumented, f"give these fields a doc= in rft_cli/config.py: {undocumented}"
    sections = {name for name, f in RunConfig.model_fields.items() if isinstance(f.annotation, type)
                and issubclass(f.annotation, BaseModel)}
    missing = [key for key, _ in keys if key not in sections and f"| `{key}` |" not in reference]
    assert not missing, missing
    assert all(f"### `{name}`" in reference for name in sections)


def test_every_command_has_its_help_in_the_reference():
    cli_page = (docs_gen.DOCS_DIR / "cli.md").read_text()
    paths = docs_gen._command_paths()
    assert ["config", "schema"] in paths and ["data", "make-arith"] in paths
    for path in paths:
        assert f"### `{' '.join(['rft', *path])}`" in cli_page


def test_type_names_read_like_the_yaml():
    assert docs_gen._type_name(typing.Literal["a", "b"]) == "one of `a`, `b`"
    assert docs_gen._type_name(list[str] | str) == "list of strings or string"
    assert docs_gen._type_name(int | None) == "integer"
    assert docs_gen._yaml_value(2**32) == "2^32" and docs_gen._yaml_value(1e-5) == "1e-05"


def test_the_openai_page_maps_every_hyperparameter_as_the_importer_does():
    """openai_import.MAPPING feeds the recipe's comment block and `--format json`; the table in
    docs/openai.md is written by hand, so it is held to the same OpenAI -> rft pairs here."""
    from rft_cli.openai_import import MAPPING

    page = (docs_gen.DOCS_DIR / "openai.md").read_text()
    for openai_key, (rft_key, _) in MAPPING.items():
        rft_cell = rft_key if rft_key.startswith("(") else f"`{rft_key}`"
        assert f"| `{openai_key}` | {rft_cell} |" in page, f"docs/openai.md: no row `{openai_key}` -> {rft_cell}"


def test_the_exit_code_table_lists_the_codes_rft_uses():
    """docs/cli.md's exit code table against the constants the code exits with."""
    import re

    from rft_cli import errors
    from rft_cli.cli.report import ALARM_EXIT_CODE

    page = (docs_gen.DOCS_DIR / "cli.md").read_text()
    table = page[page.index("## Exit codes"):page.index("## Commands")]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.M)}
    used = {errors.EXIT_OK, errors.EXIT_INVALID, errors.EXIT_USAGE, errors.EXIT_INTERRUPTED, ALARM_EXIT_CODE}
    used |= {cls.exit_code for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.RftError)}
    assert documented == used
