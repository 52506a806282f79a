"""Sustained load against a real TorchServe: no errors at all, and the worker's memory stays flat.

2,000 requests from 8 concurrent clients, modes and options mixed the way the tools use them
(mask as the GIMP plug-in asks, composites as ``handler.client`` asks, PNG and JPEG, colour and
blur, guided and bilinear refinement). A leak of one decoded 320x240 photo per request would be
~450 MB over the run; the 10% bound on the worker's RSS after warm-up catches far less than that.
"""

from __future__ import annotations

import io
import statistics
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

from tests.handler import images
from tests.reliability.conftest import rss_bytes, worker_pids

pytestmark = [pytest.mark.serve, pytest.mark.slow]

CLIENTS = 8
WARMUP = 200
TOTAL = 2000
MAX_RSS_GROWTH = 0.10
SIZE = (320, 240)


def photo_jpeg() -> bytes:
    buf = io.BytesIO()
    images.subject_photo().resize(SIZE).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def request_options(i: int) -> dict[str, str]:
    """Request ``i``'s headers: half masks, half composites; every 4th with guided refinement."""
    headers = {"X-Refine": "guided" if i % 4 == 0 else "bilinear"}
    if i % 2:
        headers["X-Mode"] = "mask"
    else:
        headers.update({"X-Mode": "composite", "X-Format": "jpeg" if i % 6 == 0 else "png",
                        "X-Background": "blur" if i % 10 == 0 else "#2E7D32"})
    return headers


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_load(server, body: bytes, first: int, count: int) -> LoadResult:
    """Send requests ``first`` .. ``first+count-1`` from CLIENTS threads (one keep-alive session each)."""
    result = LoadResult()
    lock = threading.Lock()
    todo = iter(range(first, first + count))
    auth = server.auth()

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                options = request_options(i)
                headers = {**auth, "Content-Type": "image/jpeg", **options}
                t0 = time.monotonic()
                try:
                    r = session.post(server.predictions_url, data=body, headers=headers, timeout=120)
                    error = None
                    want = "image/jpeg" if options.get("X-Format") == "jpeg" else "image/png"
                    if r.status_code != 200:
                        error = f"#{i}: HTTP {r.status_code} {r.text[:200]}"
                    elif r.headers.get("Content-Type") != want or r.headers.get("X-Image-Size") != "320x240":
                        error = f"#{i}: {r.headers.get('Content-Type')} {r.headers.get('X-Image-Size')}"
                    elif not r.content.startswith(b"\xff\xd8" if want == "image/jpeg" else b"\x89PNG"):
                        error = f"#{i}: body is not a {want}"
                except requests.RequestException as exc:
                    error = f"#{i}: {type(exc).__name__}: {exc}"
                with lock:
                    result.latencies.append(time.monotonic() - t0)
                    if error:
                        result.errors.append(error)

    threads = [threading.Thread(target=client, name=f"load-client-{n}") for n in range(CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.monotonic() - t0
    return result


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


@pytest.mark.timeout(480)
def test_2000_requests_8_clients_no_errors_and_flat_worker_memory(dedicated_server) -> None:
    server = dedicated_server
    body = photo_jpeg()
    workers = worker_pids(server)
    api = requests.get(f"{server.management_url}/models/{server.model_name}", headers=server.auth("management"),
                       timeout=30).json()[0]["workers"]
    assert len(workers) == 1 and workers == sorted(w["pid"] for w in api), (workers, api)
    idle_rss = rss_bytes(workers[0])

    warm = run_load(server, body, 0, WARMUP)
    assert not warm.errors, warm.errors[:10]
    rss_warm = rss_bytes(workers[0])
    main = run_load(server, body, WARMUP, TOTAL - WARMUP)
    rss_end = rss_bytes(workers[0])

    latencies = warm.latencies + main.latencies
    seconds = warm.seconds + main.seconds
    growth = rss_end / rss_warm - 1
    print(f"\nload: {len(latencies)} requests, {CLIENTS} clients, {seconds:.1f} s ({len(latencies) / seconds:.1f}/s), "
          f"latency p50 {statistics.median(latencies) * 1000:.0f} ms, p95 {percentile(latencies, 95) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms")
    print(f"worker {workers[0]} RSS: idle {idle_rss / 2**20:.0f} MiB, after {WARMUP} requests "
          f"{rss_warm / 2**20:.0f} MiB, after {TOTAL} {rss_end / 2**20:.0f} MiB ({growth:+.1%})")
    assert len(latencies) == TOTAL
    assert not main.errors, f"{len(main.errors)} failed requests, e.g. {main.errors[:10]}"
    assert worker_pids(server) == workers, "the worker restarted during the run"
    assert growth <= MAX_RSS_GROWTH, f"worker RSS grew {growth:.1%} after warm-up ({rss_warm} -> {rss_end} bytes)"
    # and the frontend agrees: every request counted, none as a 5xx (Prometheus text of the metrics port)
    metrics = requests.get(f"{server.metrics_url}/metrics", timeout=30).text
    assert metric_total(metrics, "ts_inference_requests_total") >= TOTAL
    assert metric_total(metrics, "Requests5XX") == 0


def metric_total(text: str, name: str) -> float:
    """Sum of a Prometheus counter's samples (0 when TorchServe has not emitted it yet)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))
