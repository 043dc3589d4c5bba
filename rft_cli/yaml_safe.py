"""The one way rft reads YAML (run configs, grader files, `--set` values): PyYAML's safe loader,
bounded against hostile files.

- Aliases may not expand past `MAX_NODES` values. PyYAML shares an aliased node instead of copying
  it, so a 377-byte file of nested aliases loads in microseconds into a value of billions of
  elements, which the first code that walks it (validation, an error message) then expands.
  The expanded size is counted on the composed node graph, once per node, before anything is built;
  an alias that refers to itself is refused too.
- Flow collections (`[...]`, `{...}`) may not nest past `MAX_FLOW_DEPTH`. PyYAML's scanner walks
  every open level for each token it reads, so a few kilobytes of `[[[[...` took a second of
  quadratic work before the composer's recursion gave out; past the cap it stops at once.
- Only plain values are built: strings, numbers, booleans, null, lists and mappings. A date
  (`type: 2020-01-01`) stays the string it is written as; `!!binary`, `!!set`, `!!omap` and
  `!!pairs` are refused (they build bytes, sets and tuples no rft value is). Python tags were
  refused by the safe loader already.

Errors are `yaml.YAMLError`s with a line (`problem_mark`), so callers report them as they report a
syntax error; deep block nesting (indentation) still raises RecursionError from PyYAML's composer.

>>> load("a: &x [1, 2]\\nb: *x\\nwhen: 2020-01-01")
{'a': [1, 2], 'b': [1, 2], 'when': '2020-01-01'}
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode
from yaml.scanner import ScannerError

MAX_NODES = 100_000
MAX_FLOW_DEPTH = 100
_REFUSED_TAGS = ("binary", "set", "omap", "pairs")


class RefusedAlias(ComposerError):
    """Aliases that expand past MAX_NODES values, or refer to their own container."""


class RefusedTag(ConstructorError):
    """A tag that builds something no rft value is (bytes, a set, ordered pairs)."""


class RefusedNesting(ScannerError):
    """Flow collections nested past MAX_FLOW_DEPTH."""


class _PlainLoader(yaml.SafeLoader):
    """The safe loader with dates kept as strings, the non-JSON collection tags refused, and flow
    collections nested at most MAX_FLOW_DEPTH deep."""

    yaml_constructors = dict(yaml.SafeLoader.yaml_constructors)

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # noqa: N803 (PyYAML's name)
        if self.flow_level >= MAX_FLOW_DEPTH:
            raise RefusedNesting(
                None,
                None,
                f"lists or mappings nested more than {MAX_FLOW_DEPTH} deep; flatten them",
                self.get_mark(),
            )
        super().fetch_flow_collection_start(TokenClass)


def _refuse(loader: _PlainLoader, node: Node) -> Any:
    raise RefusedTag(
        None,
        None,
        f"the tag {node.tag.removeprefix('tag:yaml.org,2002:')!r} is not a value rft reads "
        "(write a plain string, number, list or mapping)",
        node.start_mark,
    )


_PlainLoader.yaml_constructors["tag:yaml.org,2002:timestamp"] = _PlainLoader.construct_yaml_str
for _tag in _REFUSED_TAGS:
    _PlainLoader.yaml_constructors[f"tag:yaml.org,2002:{_tag}"] = _refuse


def load(text: str) -> Any:
    """The one document in `text`, as plain values; a `yaml.YAMLError` when it is not one."""
    loader = _PlainLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_expanded_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def check_expanded_size(root: Node, limit: int = MAX_NODES) -> int:
    """The number of values `root` holds with every alias written out; RefusedAlias past `limit`
    or on an alias that refers to itself. Each node is visited once (no recursion, any depth)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # the ancestors of the node being visited
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > limit:
                raise RefusedAlias(
                    None,
                    None,
                    f"its aliases expand to more than {limit:,} values (an alias bomb?); "
                    "write the values out or use fewer aliases",
                    node.start_mark,
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise RefusedAlias(
                None, None, "an alias refers to the value that contains it", node.start_mark
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]
