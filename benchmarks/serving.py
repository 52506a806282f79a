"""Served latency and throughput through a real TorchServe, beside the same work in-process.

    python benchmarks/serving.py                     # 1 and 12 MP; mask and composite; 1/2/4/8 clients
    python benchmarks/serving.py --megapixels 1 --clients 1 4 --requests 20
    python benchmarks/serving.py --memory            # worker peak memory for 24-megapixel requests

Starts TorchServe with ``handler.serve.start_server`` on free loopback ports from a temporary
folder, serving an archive built by ``training/export.py`` from the checkpoint (default: the
shipped weights) twice: ``plain`` (batchSize 1, the shipped setting) and ``batched`` (batchSize
``--batch-size`` within ``--batch-delay-ms``). Each client thread sends its requests one after
another over its own connection; the table gives p50/p95 latency per request and throughput.

'in-process' is the same request handled inside this process by the handler's own functions
(decode, model, refinement, render) on as many torch threads as the worker uses: 'served/in-proc'
is the serving overhead as a ratio, which stays meaningful on a noisy machine.

A 'composite' is a colour background returned as JPEG, the plug-in's common case; '-plain' modes
turn the edge stage off (``matting=off``), so 'composite' / 'composite-plain' is what the stage costs:

    python benchmarks/serving.py --megapixels 1 12 --modes mask composite composite-plain --clients 1 --no-batching
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import numpy as np
import requests
import torch
from PIL import Image

from benchmarks.photos import ASTRONAUT, group_photo, jpeg_bytes, synthetic_photo
from benchmarks.timing import median_time
from handler import serve
from handler.contract import MODEL_NAME
from handler.person_handler import render, torch_threads
from handler.request import Job, Options
from segmenter import imaging
from segmenter.checkpoint import SHIPPED_WEIGHTS
from segmenter.inference import Segmenter
from training.export import export_archive

PLAIN, BATCHED = MODEL_NAME, f"{MODEL_NAME}_batched"
MODES: dict[str, dict[str, str]] = {
    "mask": {"mode": "mask"},
    "mask-flip": {"mode": "mask", "tta": "flip"},  # the plug-in's default (Mirror pass)
    # the zoom pass (segmenter/zoom.py) forced off and on; "mask" is the served default, zoom=auto
    "mask-zoom-off": {"mode": "mask", "zoom": "off"},
    "mask-zoom-on": {"mode": "mask", "zoom": "on"},
    # the crowd network (segmenter/crowd.py) forced off: the first look alone, without the check that a photo is
    # a group; "mask" with --group pays for both networks
    "mask-crowd-off": {"mode": "mask", "crowd": "off"},
    "composite": {"mode": "composite", "background": "#1e90ff", "format": "jpeg"},
    # the same without the edge stage (segmenter/matting.py): what the stage costs
    "composite-plain": {"mode": "composite", "background": "#1e90ff", "format": "jpeg", "matting": "off"},
    "cutout": {"mode": "cutout"},
    "cutout-plain": {"mode": "cutout", "matting": "off"},
    "blur": {"mode": "composite", "background": "blur", "format": "jpeg"},
}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def in_process(seg: Segmenter, data: bytes, fields: dict[str, str], repeats: int) -> float:
    """Median seconds for the handler's work on one request, without TorchServe."""
    options = Options(mode=fields["mode"], format=fields.get("format", "png"),
                      background=_background(fields.get("background")), tta=fields.get("tta", "none"),
                      matting=fields.get("matting", "on") == "on", zoom=fields.get("zoom", Options().zoom),
                      crowd=fields.get("crowd", Options().crowd))

    def once() -> bytes:
        image = imaging.decode_image(data)
        job = Job(image, options)
        job.mask = seg.full_mask(seg.predict_lowres([image], options.tta, options.crowd)[0], image, options.refine,
                                 options.tta, options.zoom)
        return render(job)

    return median_time(once, repeats)[0]


def scaled_photo(path: Path, megapixels: float) -> Image.Image:
    """The photo at ``path``, upright, scaled to about ``megapixels`` million pixels with its own aspect."""
    photo = imaging.load_image(path)
    scale = (megapixels * 1e6 / (photo.width * photo.height)) ** 0.5
    return photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.LANCZOS)


def _background(text: str | None) -> tuple[int, int, int] | str:
    if text is None:
        return Options().background
    return text if text in ("blur", "transparent") else imaging.parse_color(text)


def load(url: str, headers: dict[str, str], data: bytes, fields: dict[str, str], clients: int,
         per_client: int) -> tuple[list[float], float, list[str]]:
    """Latencies (s) of every request, wall time, and the errors seen."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client() -> None:
        with requests.Session() as session:
            start.wait()
            for _ in range(per_client):
                t = time.perf_counter()
                r = session.post(url, headers=headers, files={"image": ("photo.jpg", data, "image/jpeg")},
                                 data=fields, timeout=300)
                dt = time.perf_counter() - t
                with lock:
                    (latencies.append(dt) if r.status_code == 200 else errors.append(f"{r.status_code} {r.text[:80]}"))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    start.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    return latencies, time.perf_counter() - t0, errors


def worker_pids(server: serve.Server) -> list[int]:
    """The Python worker processes (TorchServe's backend) under the server's frontend."""
    import psutil

    front = psutil.Process(server.pid)
    return [p.pid for p in front.children(recursive=True) if "python" in p.name().lower()]


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_table(server: serve.Server, model: str, megapixels: float) -> list[dict]:
    """Peak resident memory (VmHWM) of the worker during each kind of request, reset before each."""
    image = synthetic_photo(megapixels)
    data = jpeg_bytes(image)
    rows = []
    for name, fields in MODES.items():
        pids = worker_pids(server)
        for pid in pids:  # "5" resets the peak-RSS counter (Linux >= 4.0; needs the process's owner or root)
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        before = sum(_status_kb(pid, "VmRSS") for pid in pids)
        t = time.perf_counter()
        r = requests.post(f"{server.inference_url}/predictions/{model}", headers=server.auth(),
                          files={"image": ("photo.jpg", data, "image/jpeg")}, data=fields, timeout=600)
        dt = time.perf_counter() - t
        peak = max(_status_kb(pid, "VmHWM") for pid in pids)
        rows.append({"request": name, "status": r.status_code, "seconds": dt, "rss_before_mb": before / 1024,
                     "peak_mb": peak / 1024, "answer_mb": len(r.content) / 1e6})
    print(f"\nworker memory, {megapixels:g}-megapixel photo ({image.width}x{image.height}, JPEG "
          f"{len(data) / 1e6:.1f} MB)\n")
    print("| request | status | time (s) | RSS before (MB) | peak RSS (MB) | answer (MB) |\n| --- |" + " --- |" * 5)
    for row in rows:
        print(f"| {row['request']} | {row['status']} | {row['seconds']:.2f} | {row['rss_before_mb']:.0f} | "
              f"{row['peak_mb']:.0f} | {row['answer_mb']:.1f} |")
    return rows


def free_loopback_ports(names: dict[str, int]) -> dict[str, int]:
    """One free loopback port per name, all different: every socket stays bound until all are chosen."""
    socks = [socket.socket() for _ in names]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return {name: sock.getsockname()[1] for name, sock in zip(names, socks, strict=True)}
    finally:
        for sock in socks:
            sock.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=SHIPPED_WEIGHTS)
    p.add_argument("--megapixels", type=float, nargs="+", default=[1.0, 12.0])
    p.add_argument("--aspect", type=float, default=4 / 3,
                   help="photo width / height (default 4:3 landscape; 0.75: a 3:4 portrait, which the "
                        "encoder model runs on a narrower canvas)")
    p.add_argument("--photo", type=Path,
                   help="a real photo, scaled to each --megapixels size, instead of the synthetic one (whose drawn "
                        "figure the model does not take for a person, so zoom=auto looks again at it)")
    p.add_argument("--group", action="store_true",
                   help="a group photo: four copies of --photo (default: the astronaut of the GIMP tests), each a "
                        "quarter of the height, which the crowd network looks at as well (benchmarks/photos.py)")
    p.add_argument("--modes", nargs="+", default=["mask", "composite"], choices=sorted(MODES))
    p.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--requests", type=int, default=None,
                   help="requests per configuration (default: 40 at <= 2 MP, 16 above)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--batch-delay-ms", type=int, default=10)
    p.add_argument("--no-batching", action="store_true", help="only the shipped batchSize-1 archive")
    p.add_argument("--memory", action="store_true", help="only the worker peak-memory table (24 MP)")
    p.add_argument("--memory-megapixels", type=float, default=24.0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        store = Path(tmp) / "store"
        export_archive(args.checkpoint, store, PLAIN)
        models = {PLAIN: f"{PLAIN}.mar"}
        variants = [PLAIN]
        if not args.no_batching and not args.memory:
            export_archive(args.checkpoint, store, BATCHED,
                           settings={"batchSize": args.batch_size, "maxBatchDelay": args.batch_delay_ms})
            models[BATCHED] = f"{BATCHED}.mar"
            variants.append(BATCHED)
        ports = free_loopback_ports(serve.DEFAULT_PORTS)
        server = serve.start_server(Path(tmp) / "work", store, models=models, model_name=PLAIN, ports=ports)
        try:
            if BATCHED in models:
                serve.wait_ready(server, BATCHED)
            if args.memory:
                rows: list[dict] = memory_table(server, PLAIN, args.memory_megapixels)
            else:
                rows = latency_tables(server, args, variants)
        finally:
            server.stop()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def latency_tables(server: serve.Server, args: argparse.Namespace, variants: list[str]) -> list[dict]:
    threads = torch_threads(serve_cpus(), 1)
    torch.set_num_threads(threads)
    seg = Segmenter.from_checkpoint(args.checkpoint, device="cpu")
    print(f"torch threads in-process and per worker: {threads}; bf16 autocast: {seg.amp}")
    rows = []
    for mp in args.megapixels:
        if args.group:
            image = group_photo(imaging.load_image(args.photo or ASTRONAUT), mp)
        else:
            image = synthetic_photo(mp, aspect=args.aspect) if args.photo is None else scaled_photo(args.photo, mp)
        data = jpeg_bytes(image)
        n = args.requests or (40 if mp <= 2 else 16)
        for mode in args.modes:
            fields = MODES[mode]
            local = in_process(seg, data, fields, repeats=max(3, n // 8))
            for variant in variants:
                url = f"{server.inference_url}/predictions/{variant}"
                load(url, server.auth(), data, fields, 1, 2)  # warm-up
                for clients in args.clients:
                    per_client = max(1, n // clients)
                    lat, wall, errors = load(url, server.auth(), data, fields, clients, per_client)
                    row = {"megapixels": mp, "size": f"{image.width}x{image.height}", "mode": mode,
                           "batching": variant == BATCHED, "clients": clients, "requests": clients * per_client,
                           "errors": len(errors), "in_process_ms": local * 1e3,
                           "p50_ms": percentile(lat, 50) * 1e3 if lat else float("nan"),
                           "p95_ms": percentile(lat, 95) * 1e3 if lat else float("nan"),
                           "throughput_rps": len(lat) / wall}
                    rows.append(row)
                    if errors:
                        print(f"  errors: {errors[:3]}", file=sys.stderr)
                    print(f"  {mp:g} MP {mode} {'batched' if row['batching'] else 'plain'} x{clients}: "
                          f"p50 {row['p50_ms']:.0f} ms", file=sys.stderr)
    print("\n| photo | mode | batching | clients | requests | errors | in-process (ms) | p50 (ms) | p95 (ms) "
          "| served/in-proc (p50) | throughput (req/s) |\n|" + " --- |" * 11)
    for r in rows:
        batching = f"batch {args.batch_size}" if r["batching"] else "off"
        print(f"| {r['megapixels']:g} MP ({r['size']}) | {r['mode']} | {batching} "
              f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['in_process_ms']:.0f} | {r['p50_ms']:.0f} "
              f"| {r['p95_ms']:.0f} | {r['p50_ms'] / r['in_process_ms']:.2f} | {r['throughput_rps']:.2f} |")
    return rows


def serve_cpus() -> int:
    """Cores this process may use: what the worker's thread count is computed from."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
