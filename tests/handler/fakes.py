"""Stand-ins for TorchServe's per-batch ``Context``, so the handler runs in-process in tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
