# GIMP-side half of benchmarks/gimp_png.py, run by python-fu-eval inside the GIMP 3 root:
#   gimp-console-3.0 -i -d -f --batch-interpreter=python-fu-eval -b 'exec(open("/bench/gimp_png_driver.py").read())'
# Reads /bench/job.json, times the plug-in's PNG paths on one layer and writes /bench/result.json.
"""Times the plug-in's PNG paths inside GIMP: the current one (GIMP's PNG export and loader) and a
former one (pixels read into Python, a PNG encoder and checker written in Python)."""

import importlib.util
import json
import os
import statistics
import sys
import time

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gimp, Gio  # noqa: E402

JOB = "/bench/job.json"


def load_module(name, path):
    """A module from a file; the plug-in's folder first on sys.path, as GIMP runs it."""
    sys.path.insert(0, os.path.dirname(path))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def median_seconds(fn, repeats):
    """Median wall time of ``repeats`` calls after one warm-up call (plug-in start-up, caches)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 3)


def main():
    """Time both paths on the job's photo and mask in this GIMP; write result.json next to the job."""
    with open(JOB) as fh:
        job = json.load(fh)
    plugin = load_module("rb_plugin", job["plugin"])
    core = plugin.core
    old = load_module("rb_old_core", job["old_core"]) if job.get("old_core") else None
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(job["photo"]))
    layer = image.get_layers()[0]
    w, h = layer.get_width(), layer.get_height()
    with open(job["mask"], "rb") as fh:
        answer = fh.read()
    url = "http://bench"

    def new_decode():
        """What fetch_mask does with the answer now: whole-PNG check, GIMP's loader, format check, read."""
        core.check_png_complete(answer, url)
        mask_img = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(job["mask"]))
        mask_layer = mask_img.get_layers()[0]
        kind = plugin.describe_format(mask_img, mask_layer)
        core.check_mask_format(kind, (mask_layer.get_width(), mask_layer.get_height()), (w, h), url)
        plugin._read_pixels(mask_layer, "Y' u8", 1, lambda _f: None)
        mask_img.delete()

    result = {"size": [w, h], "repeats": job["repeats"], "new": {}, "old": {}}
    result["new"]["encode_s"] = median_seconds(lambda: plugin.export_png(layer), job["repeats"])
    result["new"]["png_bytes"] = len(plugin.export_png(layer))
    result["new"]["decode_s"] = median_seconds(new_decode, job["repeats"])
    if old is not None:
        channels = 4 if layer.has_alpha() else 3
        fmt = "R'G'B'A u8" if channels == 4 else "R'G'B' u8"

        def old_encode():
            """The former upload: pixels read into Python, then its own PNG encoder."""
            return old.encode_png(w, h, channels, plugin._read_pixels(layer, fmt, channels, lambda _f: None))

        def old_decode():
            """The former answer path: its Python PNG checker (chunks, CRCs, inflate), then GIMP's loader."""
            old.check_mask_png(answer, w, h, url)
            mask_img = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(job["mask"]))
            plugin._read_pixels(mask_img.get_layers()[0], "Y' u8", 1, lambda _f: None)
            mask_img.delete()

        result["old"]["encode_s"] = median_seconds(old_encode, job["repeats"])
        result["old"]["png_bytes"] = len(old_encode())
        result["old"]["decode_s"] = median_seconds(old_decode, job["repeats"])
    image.delete()
    with open(os.path.join(os.path.dirname(JOB), "result.json"), "w") as fh:
        json.dump(result, fh)


main()
