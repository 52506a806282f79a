"""TorchServe's own per-batch ``Context``, built as a worker builds it, so the handler runs in-process in
tests; and ``run`` to send one batch through the handler exactly as a worker would.

A hand-written stand-in context used to live here; it could not show what TorchServe's real one does
(the inherited explain path that failed in a real worker, per-request status and headers kept in
``RequestProcessor`` objects, request headers merged with per-field content types). ``run`` builds
the batch in the worker's message format and lets ``ts.service.Service.retrieve_data_for_inference``
turn it into request rows and ``RequestProcessor`` objects, then calls ``handle`` as
``Service.predict`` does.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path
from typing import Any

import ts
from PIL import Image
from ts.context import Context
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.service import Service

_METRICS_CONFIG = os.path.join(os.path.dirname(ts.__file__), "configs", "metrics.yaml")


def worker_context(model_dir: str | Path, model_yaml_config: dict[str, Any] | None = None) -> Context:
    """A ``ts.context.Context`` with the arguments and metrics cache a model worker gives it."""
    metrics = MetricsCacheYamlImpl(config_file_path=_METRICS_CONFIG)
    metrics.initialize_cache()
    metrics.set_request_ids(str(uuid.uuid4()))  # as ts.model_loader does while the model loads
    manifest = {"model": {"modelName": "person_segmenter", "serializedFile": "weights.pt"}}
    return Context("person_segmenter", str(model_dir), manifest, 1, None, ts.__version__, True, metrics,
                   model_yaml_config or {"minWorkers": 1, "maxWorkers": 1})


class Answer:
    """What the handler answered for one request of a batch, read back through the Context."""

    def __init__(self, ctx: Context, idx: int, body: bytes) -> None:
        self.status, self.reason = ctx.get_response_status(idx)
        headers = ctx.get_response_headers(idx)
        self.content_type = headers.get("content-type")
        self.headers = {k: v for k, v in headers.items() if k != "content-type"}
        self.body = body

    def image(self) -> Image.Image:
        assert self.status == 200, self.body[:300]
        img = Image.open(io.BytesIO(self.body))
        img.load()
        return img

    def error(self) -> str:
        assert self.content_type == "application/json"
        return json.loads(self.body)["error"]


def _message(row: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """One request as the frontend hands it to a worker (values already decoded by their content type)."""
    return {"requestId": uuid.uuid4().hex.encode(),
            "parameters": [{"name": k, "value": v, "contentType": "application/octet-stream"} for k, v in row.items()],
            "headers": [{"name": k.encode(), "value": v.encode()} for k, v in headers.items()]}


def run(h: Any, rows: list[dict[str, Any]], headers: list[dict[str, str]] | None = None) -> list[Answer]:
    """One batch through ``handle`` exactly as ``ts.service.Service.predict`` calls it."""
    ctx = h.context
    batch = [_message(row, hdr) for row, hdr in zip(rows, headers or [{} for _ in rows], strict=True)]
    processors, input_batch, req_ids = Service.retrieve_data_for_inference(batch)
    ctx.request_ids = req_ids
    ctx.request_processor = processors
    ctx.metrics.request_ids = req_ids
    out = h.handle(input_batch, ctx)
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
