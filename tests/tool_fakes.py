"""A tool server on loopback (127.0.0.1 only) for the endpoint tests, and scripted policies for the
episode runner's protocol tests.

Each path of the server behaves one way, as a real tool endpoint might: `/ok` answers the call,
`/flaky` fails with 500 twice then answers, `/drip` sends its reply a byte at a time, `/redirect`
points at another origin... Every request is recorded (path, headers, JSON body)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    request_queue_size = 64  # the default 5 drops connections rft makes 8 at a time (1 s retries)


class ToolServer:
    """A threaded HTTP server on 127.0.0.1 and a free port; `url(path)` is its address."""

    def __init__(self, other_origin: str = "") -> None:
        self.requests: list[dict] = []
        self.counts: dict[str, int] = {}
        self.other_origin = other_origin
        self.lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def record(self, path: str, headers: dict, body: bytes) -> int:
        with self.lock:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            self.requests.append({"path": path, "headers": headers, "body": parsed})
            self.counts[path] = self.counts.get(path, 0) + 1
            return self.counts[path]


def _handler(server: ToolServer) -> type:
    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802  http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            count = server.record(self.path, dict(self.headers), body)
            call = json.loads(body) if body.startswith(b"{") else {}
            route = getattr(self, "route_" + self.path.strip("/").replace("-", "_"), None)
            if route is None:
                return self.reply(404, {"error": f"no route {self.path}"})
            route(call, count)

        def reply(
            self, status: int, data: object, raw: bytes | None = None, headers: dict | None = None
        ) -> None:
            payload = raw if raw is not None else json.dumps(data).encode()
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def answer(self, call: dict, output: object) -> None:
            self.reply(
                200,
                {"type": "function_call_output", "call_id": call.get("call_id"), "output": output},
            )

        def route_ok(self, call: dict, count: int) -> None:
            arguments = json.loads(call.get("arguments") or "{}")
            self.answer(call, f"value of {arguments.get('key')}")

        def route_json_output(self, call: dict, count: int) -> None:
            self.answer(call, {"values": [1, 2]})

        def route_surrogate(self, call: dict, count: int) -> None:
            self.reply(200, None, raw=b'{"output": "a\\ud800b\\u0000c\\nd"}')

        def route_not_found(self, call: dict, count: int) -> None:
            self.reply(404, {"error": "no such key"})

        def route_refused_with_output(self, call: dict, count: int) -> None:
            self.reply(422, {"output": "key must be two letters"})

        def route_flaky(self, call: dict, count: int) -> None:
            if count <= 2:
                return self.reply(503, {"error": "busy"})
            self.answer(call, "third time")

        def route_down(self, call: dict, count: int) -> None:
            self.reply(500, {"error": "down"})

        def route_slow(self, call: dict, count: int) -> None:
            time.sleep(3)
            self.answer(call, "late")

        def route_drip(self, call: dict, count: int) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):  # 0.05 s a byte: each read is quick, the whole is 50 s
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:  # the client gave up: what the test wants
                pass

        def route_huge(self, call: dict, count: int) -> None:
            self.reply(200, None, raw=b'{"output": "' + b"x" * (3 << 20) + b'"}')

        def route_malformed(self, call: dict, count: int) -> None:
            self.reply(200, None, raw=b"<html>not json</html>")

        def route_no_output(self, call: dict, count: int) -> None:
            self.reply(200, {"type": "function_call_output", "call_id": call.get("call_id")})

        def route_redirect(self, call: dict, count: int) -> None:
            self.reply(307, {}, headers={"Location": server.other_origin + "/ok"})

        def route_redirect_same(self, call: dict, count: int) -> None:
            self.reply(302, {}, headers={"Location": "/ok"})

    return Handler


class ScriptedPolicy:
    """A policy that writes scripted turns: `script[key][t]` is turn t of the episode whose prompt
    contains `key` (a text found nowhere else, such as "Q1?"). Each turn is the text's tokens and the stop token (unless the text ends with
    NO_STOP, which is cut off); like generate, a turn ends at its first stop token or at
    `max_new_tokens`. Every call is
    recorded: the sequences it was given and the tokens it answered."""

    NO_STOP = "\x00"

    def __init__(self, tokenizer, script: dict[str, list[str]], opening: str) -> None:
        self.tokenizer, self.script, self.opening = tokenizer, script, opening
        self.stop = {tokenizer.eos_token_id}
        self.calls: list[tuple[list[list[int]], int, list[list[int]]]] = []

    def generate(self, sequences: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        out = [self._cut(self._turn(s)[:max_new_tokens]) for s in sequences]
        self.calls.append(([list(s) for s in sequences], max_new_tokens, out))
        return out

    def _cut(self, tokens: list[int]) -> list[int]:
        """As generation does: the turn ends at its first stop token."""
        stops = [i for i, t in enumerate(tokens) if t in self.stop]
        return tokens[: stops[0] + 1] if stops else tokens

    def _turn(self, sequence: list[int]) -> list[int]:
        text = self.tokenizer.decode(sequence)
        key = next(k for k in self.script if k in text)
        turn = self.script[key][text.count(self.opening) - 1]
        if turn.endswith(self.NO_STOP):
            return self.tokenizer.encode(turn[:-1], add_special_tokens=False)
        return self.tokenizer.encode(turn, add_special_tokens=False) + [self.tokenizer.eos_token_id]


class FakeToolBox:
    """Tools as plain functions: `lookup` reads TABLE, `fail` drops the episode; every request kept."""

    TABLE = {"ka": "17", "mo": "42"}

    def __init__(self) -> None:
        self.requests: list = []

    def tool_definitions(self) -> list[dict]:
        return [
            {
                "type": "function",
                "function": {
                    "name": n,
                    "parameters": {"type": "object", "properties": {"key": {"type": "string"}}},
                },
            }
            for n in ("lookup", "fail")
        ]

    def run(self, requests: list) -> list:
        from rft_cli.tools.base import ToolResult, dropped, shown_error

        self.requests += requests
        results = []
        for request in requests:
            key = json.loads(request.arguments).get("key")
            if request.name == "fail":
                results.append(dropped("tool_server_error", "HTTP 503 (after 4 attempts)"))
            elif key in self.TABLE:
                results.append(ToolResult(output=self.TABLE[key]))
            else:
                results.append(shown_error("tool_exception", f"KeyError: {key!r}"))
        return results
