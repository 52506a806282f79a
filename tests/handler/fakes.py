"""Stand-ins for TorchServe's per-batch ``Context``, so the handler runs in-process in tests, and
``run`` to send one batch through the handler exactly as TorchServe would."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image


class FakeContext:
    """The parts of ``ts.context.Context`` the handler uses, recording what it sets per index."""

    def __init__(self, model_dir: str | Path, headers: list[dict[str, str]] | None = None,
                 model_yaml_config: dict[str, Any] | None = None) -> None:
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None, "batch_size": 1}
        self.model_yaml_config = model_yaml_config or {"minWorkers": 1, "maxWorkers": 1}
        self.manifest = {"model": {"modelName": "person_segmenter", "serializedFile": "weights.pt"}}
        self.metrics = _NullMetrics()
        self.set_batch(headers or [{}])

    def set_batch(self, headers: list[dict[str, str]]) -> None:
        """Start a new batch: one header dict per request, responses reset."""
        self.headers = headers
        self.status = [(200, None)] * len(headers)
        self.content_type: list[str | None] = [None] * len(headers)
        self.response_headers: list[dict[str, str]] = [{} for _ in headers]

    def get_request_header(self, idx: int, key: str) -> Any:
        return self.headers[idx].get(key)

    def get_all_request_header(self, idx: int) -> dict[str, Any]:
        return self.headers[idx]

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_type[idx] = value

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.status[idx] = (code, phrase)

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.response_headers[idx][key] = value


class _NullMetrics:
    def add_time(self, *args: Any, **kwargs: Any) -> None:
        pass


class Answer:
    """What the handler answered for one request of a batch."""

    def __init__(self, ctx: FakeContext, idx: int, body: bytes) -> None:
        self.status, self.reason = ctx.status[idx]
        self.content_type = ctx.content_type[idx]
        self.headers = ctx.response_headers[idx]
        self.body = body

    def image(self) -> Image.Image:
        assert self.status == 200, self.body[:300]
        img = Image.open(io.BytesIO(self.body))
        img.load()
        return img

    def error(self) -> str:
        assert self.content_type == "application/json"
        return json.loads(self.body)["error"]


def run(h: Any, rows: list[dict[str, Any]], headers: list[dict[str, str]] | None = None
        ) -> list[Answer]:
    """One batch through ``handle`` exactly as TorchServe calls it."""
    ctx = h.context
    ctx.set_batch(headers or [{} for _ in rows])
    out = h.handle(rows, ctx)
    assert len(out) == len(rows)
    return [Answer(ctx, i, body) for i, body in enumerate(out)]


def raw(data: bytes) -> dict[str, Any]:
    """A raw-body request row, as TorchServe builds it."""
    return {"body": bytearray(data)}


def form(image: bytes, **fields: str | bytes) -> dict[str, Any]:
    """A multipart request row: every field arrives as a bytearray."""
    row: dict[str, Any] = {"image": bytearray(image)}
    row.update({k: bytearray(v if isinstance(v, bytes) else v.encode()) for k, v in fields.items()})
    return row
