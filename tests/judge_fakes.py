"""A fake OpenAI-compatible chat endpoint on 127.0.0.1 for the model-grader tests (no network)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeJudge:
    """What the endpoint answers and what it was sent.

    `replies` is a queue of (HTTP status, message content); when it is empty, `answer(body)` gives
    the content. `refuse_response_format` answers 400 to a request that carries `response_format`,
    like a server without structured outputs.
    """

    def __init__(self) -> None:
        self.replies: list[tuple[int, str]] = []
        self.requests: list[dict[str, Any]] = []
        self.answer: Callable[[dict[str, Any]], str] | None = None
        self.refuse_response_format = False
        self.url = ""

    def respond(self, body: dict[str, Any]) -> tuple[int, str]:
        if self.refuse_response_format and "response_format" in body:
            return 400, "response_format is not supported"
        if self.replies:
            return self.replies.pop(0)
        if self.answer is not None:
            return 200, self.answer(body)
        return 500, "no reply queued"


def _handler(fake: FakeJudge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.requests.append(
                {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
            )
            status, content = fake.respond(body)
            payload = json.dumps(
                {"choices": [{"message": {"role": "assistant", "content": content}}]}
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def fake_judge() -> Iterator[FakeJudge]:
    """Serve a FakeJudge; its `url` is the base URL (…/v1) to put in `base_url` or OPENAI_BASE_URL."""
    fake = FakeJudge()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last message the judge was sent."""
    return body["messages"][-1]["content"]
