"""Exit 0 when the model has a READY worker, 1 otherwise: the container's health check and the
Kubernetes probes (docs/DEPLOY.md).

TorchServe's ``/ping`` is no such check: it answered "Healthy" while the only worker crash-looped.
The management API's model description lists each worker's status, and it listens on 127.0.0.1
inside the container only, so this runs there (``podman exec``, an exec probe). Standard library
only: it starts in a few tens of milliseconds, which matters for a probe run every few seconds.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

MANAGEMENT_URL = os.environ.get("REPLACE_BACKGROUND_MANAGEMENT_URL", "http://127.0.0.1:8081")
MODEL_NAME = os.environ.get("REPLACE_BACKGROUND_MODEL", "person_segmenter")
TIMEOUT_S = 3.0


def ready_workers(description: object) -> tuple[int, int]:
    """(READY workers, all workers) from ``GET /models/NAME``'s answer (a list with one model)."""
    models = description if isinstance(description, list) else [description]
    workers = [w for m in models if isinstance(m, dict) for w in (m.get("workers") or []) if isinstance(w, dict)]
    return sum(1 for w in workers if w.get("status") == "READY"), len(workers)


def main() -> int:
    url = f"{MANAGEMENT_URL.rstrip('/')}/models/{MODEL_NAME}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_S) as answer:
            description = json.load(answer)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"not ready: {url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    ready, total = ready_workers(description)
    if ready == 0:
        print(f"not ready: {MODEL_NAME} has {total} worker(s), none READY", file=sys.stderr)
        return 1
    print(f"ready: {MODEL_NAME} has {ready} of {total} worker(s) READY")
    return 0


if __name__ == "__main__":
    sys.exit(main())
