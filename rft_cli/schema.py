"""JSON Schemas of the files users write by hand: run configs (recipes) and grader files.

Editors that speak the YAML language server protocol (VS Code's YAML extension, JetBrains IDEs,
Neovim's yamlls) read them to complete keys, show each key's description and flag mistakes while
a recipe is typed. Both are generated from the pydantic models that check the files at run time,
so the schema and `rft train` agree on what is valid (a test validates every shipped recipe).
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from rft_cli.config import RunConfig
from rft_cli.graders.build import GRADERS

# Draft 7: what the YAML language server supports (it reads "$defs" references as plain JSON pointers).
SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"


def grader_schema() -> dict[str, Any]:
    """The schema of one grader object (a grader file, or `grader:` inline in a recipe).

    Every registered grader type is one branch, told apart by `type`; a `multi` grader's
    sub-graders are graders again.
    """
    specs = tuple(t.spec for t in GRADERS.values())
    union: Any = Annotated[Union[specs], Field(discriminator="type")]  # noqa: UP007  (a runtime tuple of types)
    schema = TypeAdapter(union).json_schema(ref_template="#/$defs/{model}")
    defs = schema.pop("$defs", {})
    defs["Grader"] = schema
    multi = next(
        (
            d
            for d in defs.values()
            if d.get("properties", {}).get("type", {}).get("const") == "multi"
        ),
        None,
    )
    if multi is not None:
        # MultiSpec keeps its sub-graders as plain mappings (each is built, and checked, on its own);
        # for an editor they are graders like any other.
        multi["properties"]["graders"]["additionalProperties"] = {"$ref": "#/$defs/Grader"}
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "rft grader file",
        "description": "One grader: OpenAI's grader JSON (as YAML or JSON) plus rft's own types, chosen by `type`.",
        "$ref": "#/$defs/Grader",
        "$defs": defs,
    }


def run_config_schema() -> dict[str, Any]:
    """The schema of a run config (`rft train RECIPE.yaml`), with the inline grader's schema in it."""
    schema = RunConfig.model_json_schema(ref_template="#/$defs/{model}")
    grader = grader_schema()
    schema.setdefault("$defs", {}).update(grader["$defs"])
    described = schema["properties"]["grader"].get("description", "")
    schema["properties"]["grader"] = {
        "description": described,
        "anyOf": [
            {
                "type": "string",
                "description": "A grader file (YAML or JSON), relative to the recipe.",
            },
            {"$ref": "#/$defs/Grader"},
        ],
    }
    schema["properties"]["model"] = {
        "description": schema["properties"]["model"].get("description", ""),
        "anyOf": [
            {"type": "string", "description": "Short for model.name."},
            {"$ref": "#/$defs/ModelSettings"},
        ],
    }
    return {"$schema": SCHEMA_DIALECT, **schema, "title": "rft run config"}
