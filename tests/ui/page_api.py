"""The page's own HTTP API, used the way a client (or an attacker) would: Gradio's upload route
and its event API (``call/NAME`` then the event's SSE stream, or ``queue/join``)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import httpx


@dataclass
class EventAnswer:
    """What the page answered to one event: the join's HTTP status and body, and (when the
    join was accepted) the final SSE event (``complete`` / ``error``) with its data."""

    join_status: int
    join_body: str
    event: str | None = None
    data: object = None

    @property
    def text(self) -> str:
        """Everything the client received, for "the secret never appears" checks."""
        return self.join_body + json.dumps(self.data, ensure_ascii=False)


class PageClient:
    def __init__(self, base: str, *, headers: dict[str, str] | None = None):
        self.base = base.rstrip("/") + "/ui"
        self.http = httpx.Client(timeout=60, headers=headers or {})

    def close(self) -> None:
        self.http.close()

    def upload(self, name: str, data: bytes) -> httpx.Response:
        return self.http.post(f"{self.base}/gradio_api/upload", files={"files": (name, data)})

    def call(self, api_name: str, data: list) -> EventAnswer:
        """``POST call/NAME`` then read the event's stream to its end."""
        join = self.http.post(f"{self.base}/gradio_api/call/{api_name}", json={"data": data})
        answer = EventAnswer(join.status_code, join.text)
        if join.status_code != 200:
            return answer
        event_id = join.json()["event_id"]
        with self.http.stream("GET", f"{self.base}/gradio_api/call/{api_name}/{event_id}") as s:
            event = None
            for line in s.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    answer.event = event
                    raw = line.split(":", 1)[1].strip()
                    try:
                        answer.data = json.loads(raw)
                    except ValueError:
                        answer.data = raw
                    break
        return answer

    def join(self, fn_index: int, data: list) -> httpx.Response:
        """``POST queue/join`` (what the browser sends); only the join's answer."""
        body = {"data": data, "fn_index": fn_index, "session_hash": uuid.uuid4().hex[:10]}
        return self.http.post(f"{self.base}/gradio_api/queue/join", json=body)

    def fn_index(self, api_name: str) -> int:
        config = self.http.get(f"{self.base}/config").json()
        for index, dependency in enumerate(config["dependencies"]):
            if dependency.get("api_name") == api_name:
                return dependency.get("id", index)
        raise KeyError(api_name)


def file_data(path: str, name: str | None = None) -> dict:
    """A Gradio file reference, as the page's upload sends it."""
    data = {"path": path, "meta": {"_type": "gradio.FileData"}}
    if name:
        data["orig_name"] = name
    return data
