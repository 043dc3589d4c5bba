"""The tools of a recipe (or of `rft eval --tools FILE`), run by name."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rft_cli.errors import ConfigError, GraderError
from rft_cli.tools.base import TOOL_UNKNOWN, ToolRequest, ToolResult, shown_error
from rft_cli.tools.endpoint import EndpointTool
from rft_cli.tools.python_tool import PythonToolFile
from rft_cli.tools.schema import function_definitions

MAX_PARALLEL_CALLS = 8  # endpoint calls in flight at once


class ToolBox:
    """Runs calls by tool name; `definitions` are the tools' OpenAI function definitions (for rows
    that define none). Never raises on a call; `close()` stops the python tools' workers."""

    def __init__(
        self,
        endpoints: dict[str, EndpointTool] | None = None,
        python_files: Sequence[PythonToolFile] = (),
        definitions: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.endpoints = dict(endpoints or {})
        self.python_files = list(python_files)
        self.python = {name: f for f in self.python_files for name in f.functions}
        self.definitions = dict(definitions or {})

    @property
    def names(self) -> list[str]:
        return [*self.python, *self.endpoints]

    def tool_definitions(self) -> list[dict[str, Any]]:
        """The definitions the model sees when a row has no `tools` of its own."""
        return [self.definitions[name] for name in self.names if name in self.definitions]

    def run(self, requests: Sequence[ToolRequest]) -> list[ToolResult]:
        """One result per request, in order."""
        results: list[ToolResult | None] = [None] * len(requests)
        by_file: dict[int, list[int]] = {}
        jobs = []
        for i, request in enumerate(requests):
            if request.name in self.python:
                by_file.setdefault(id(self.python[request.name]), []).append(i)
            elif request.name in self.endpoints:
                jobs.append(([i], self._endpoint_job(request)))
            else:
                results[i] = unknown_tool(request.name, self.names)
        for indices in by_file.values():
            file = self.python[requests[indices[0]].name]
            jobs.append((indices, _file_job(file, [requests[i] for i in indices])))
        if len(jobs) == 1:
            self._collect(results, jobs[0][0], jobs[0][1]())
        elif jobs:
            with ThreadPoolExecutor(min(len(jobs), MAX_PARALLEL_CALLS)) as pool:
                futures = [(indices, pool.submit(job)) for indices, job in jobs]
                for indices, future in futures:
                    self._collect(results, indices, future.result())
        return results  # type: ignore[return-value]

    def _endpoint_job(self, request: ToolRequest) -> Any:
        tool = self.endpoints[request.name]
        return lambda: [tool.call(request)]

    @staticmethod
    def _collect(results: list, indices: list[int], outputs: list[ToolResult]) -> None:
        for i, result in zip(indices, outputs, strict=True):
            results[i] = result

    def sandbox_layers(self) -> list[str]:
        """The sandbox layers the python tools' workers applied (after their first call)."""
        return sorted({layer for f in self.python_files for layer in f.layers()})

    def close(self) -> None:
        for file in self.python_files:
            file.close()

    def __enter__(self) -> ToolBox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _file_job(file: PythonToolFile, requests: list[ToolRequest]) -> Any:
    return lambda: file.run(requests)


def unknown_tool(name: str, names: Sequence[str]) -> ToolResult:
    """What the model reads after calling a tool that is not offered."""
    offered = ", ".join(names) or "none"
    return shown_error(TOOL_UNKNOWN, f"there is no tool named {name!r} (tools: {offered})")


def load_toolbox(tools: Sequence[Any], where: str = "tools") -> ToolBox:
    """A ToolBox from a recipe's `tools` (`rft_cli.config.ToolSettings`, paths already resolved).

    Python files are read and their functions' definitions built from the source (never run
    here); endpoint headers' environment variables must be set. Raises ConfigError naming the tool.
    """
    endpoints: dict[str, EndpointTool] = {}
    definitions: dict[str, dict[str, Any]] = {}
    files: dict[tuple[str, float, int, int], list[tuple[str, str]]] = {}
    for i, tool in enumerate(tools):
        here = f"{where}[{i}]"
        if tool.server_url is not None:
            endpoints[tool.name] = EndpointTool(
                tool.name, tool.server_url, tool.headers, tool.timeout, tool.retries, here
            )
            if tool.parameters is not None or tool.description:
                definitions[tool.name] = _endpoint_definition(tool)
        else:
            key = (str(Path(tool.python).resolve()), tool.timeout, tool.memory_mb, tool.retries)
            files.setdefault(key, []).append((tool.name, here))
    python_files = []
    for (path, timeout, memory_mb, retries), named in files.items():
        source = _read_source(Path(path), named[0][1])
        names = [name for name, _ in named]
        definitions.update(function_definitions(source, names, path))
        _check_imports(source, path)
        python_files.append(PythonToolFile(source, names, timeout, memory_mb, retries))
    return ToolBox(endpoints, python_files, definitions)


def definitions_of(tools: Sequence[Any], where: str = "tools") -> dict[str, dict[str, Any] | None]:
    """name -> OpenAI function definition of each tool (None for an endpoint tool with no
    `parameters` or `description`), without starting anything or reading any secret."""
    found: dict[str, dict[str, Any] | None] = {}
    for i, tool in enumerate(tools):
        if tool.server_url is not None:
            has_schema = tool.parameters is not None or tool.description
            found[tool.name] = _endpoint_definition(tool) if has_schema else None
        else:
            source = _read_source(Path(tool.python), f"{where}[{i}]")
            found.update(function_definitions(source, [tool.name], str(tool.python)))
    return found


def _endpoint_definition(tool: Any) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = tool.parameters or {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


def _read_source(path: Path, where: str) -> str:
    from rft_cli.files import read_text

    return read_text(path, f"the Python file of {where}.python")


def _check_imports(source: str, path: str) -> None:
    """Refuse a tool file importing a package this Python lacks, before any episode runs."""
    import ast

    from rft_cli.graders.python_grader import check_imports

    try:
        check_imports(ast.parse(source), path)
    except GraderError as exc:
        raise ConfigError(str(exc)) from None


def read_tools_file(path: str | Path) -> tuple[list[Any], Any]:
    """(tools, episode settings) from `rft eval --tools FILE`: a recipe (its `tools` and
    `episode`), or a file holding only those two keys. Python paths are read relative to it."""
    from rft_cli.config import EpisodeSettings, ToolSettings, load_run_config
    from rft_cli.files import read_yaml

    path = Path(path)
    data = read_yaml(path, "the tools file")
    if isinstance(data, dict) and "model" in data:
        config = load_run_config(path)
        tools, episode = config.tools, config.episode
    else:
        tools, episode = _tools_only(data, path, ToolSettings, EpisodeSettings)
    if not tools:
        raise ConfigError(f"{path}: defines no tools (give a `tools:` list; docs/agent.md)")
    return tools, episode


def _tools_only(data: Any, path: Path, tool_type: Any, episode_type: Any) -> tuple[list[Any], Any]:
    from pydantic import BaseModel, ConfigDict, ValidationError

    from rft_cli.config import _format_error, _resolve_paths

    class ToolsFile(BaseModel):
        model_config = ConfigDict(extra="forbid")
        tools: list[tool_type]
        episode: episode_type = episode_type()

    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a tools file is a YAML mapping with `tools:` (and `episode:`)")
    _resolve_paths(data, path.resolve().parent)
    try:
        parsed = ToolsFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"{path}: " + "; ".join(_format_error(e) for e in exc.errors()[:5])
        ) from None
    return parsed.tools, parsed.episode
