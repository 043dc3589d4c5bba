"""Tools the policy calls during an episode: Python functions in the sandbox, HTTP endpoints.

    toolbox = load_toolbox(config.tools)            # from a recipe's `tools` (rft_cli.config)
    results = toolbox.run([ToolRequest("lookup", '{"key": "ka"}', call_id="call_1")])
    results[0].output                               # "17"
    toolbox.close()

A call never raises and never hangs the caller: each result is an output the model reads (errors
included, counted by kind) or a failure that drops the episode (`rft_cli.tools.base`). Calls of
one `run` go out together: an endpoint's in threads, a python file's through its worker pool.
"""

from __future__ import annotations

from rft_cli.tools.base import ToolRequest, ToolResult
from rft_cli.tools.toolbox import ToolBox, load_toolbox, read_tools_file

__all__ = ["ToolBox", "ToolRequest", "ToolResult", "load_toolbox", "read_tools_file"]
