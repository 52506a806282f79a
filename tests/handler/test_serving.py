"""A real TorchServe (the ``torchserve_server`` fixture): modes, alignment, auth, errors, batching,
the management API, metrics, key rotation, the batch client, and a clean stop."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from benchmarks.photos import ASTRONAUT, group_photo
from handler import client as client_mod
from handler import serve
from handler.serve import group
from segmenter import crowd, imaging
from segmenter.inference import Segmenter
from tests.conftest import BATCH_MODEL_NAME, BATCH_SETTINGS, skip_without_torchserve
from tests.handler import images
from tests.handler.served import as_image, describe, post, worker_pids
from tests.ports import free_ports

pytestmark = pytest.mark.serve

PNG = images.encode(images.subject_photo())


def test_workers_ready_and_config_applied(torchserve_server) -> None:
    d = describe(torchserve_server).json()[0]
    assert d["modelName"] == "person_segmenter" and d["workers"]
    assert all(w["status"] == "READY" for w in d["workers"])
    assert d["batchSize"] == 1 and d["minWorkers"] == 1 and d["maxWorkers"] == 1
    assert torchserve_server.key_file.is_file() and torchserve_server.inference_url.startswith("http://127.0.0.1:")


@pytest.mark.parametrize("how", ["raw+headers", "multipart"])
@pytest.mark.parametrize("options,mode,ctype", [
    ({}, "L", "image/png"),
    ({"mode": "cutout"}, "RGBA", "image/png"),
    ({"mode": "composite"}, "RGB", "image/png"),
    ({"mode": "composite", "background": "#00ff00"}, "RGB", "image/png"),
    ({"mode": "composite", "background": "blur", "blur_radius": "5"}, "RGB", "image/png"),
    ({"mode": "composite", "background": "transparent"}, "RGBA", "image/png"),
    ({"mode": "composite", "background": "blur", "format": "jpeg"}, "RGB", "image/jpeg"),
    ({"mode": "mask", "refine": "bilinear"}, "L", "image/png"),
    ({"mode": "composite", "tta": "flip"}, "RGB", "image/png"),
])
def test_every_mode_over_http(torchserve_server, how: str, options: dict, mode: str, ctype: str) -> None:
    if how == "multipart":
        r = post(torchserve_server, files={"image": ("p.png", PNG, "image/png")}, fields=options)
    else:
        hdrs = {f"X-{k.replace('_', '-').title()}": v for k, v in options.items()}
        r = post(torchserve_server, PNG, headers=hdrs)
    img = as_image(r)
    assert r.headers["Content-Type"] == ctype and img.mode == mode
    assert img.size == images.SUBJECT_SIZE and r.headers["X-Image-Size"] == "360x240"


def test_uploaded_background_over_http(torchserve_server) -> None:
    bg = images.encode(images.noise_photo((90, 500), seed=4), "JPEG")
    files = {"image": ("p.png", PNG, "image/png"), "background": ("bg.jpg", bg, "image/jpeg")}
    r = post(torchserve_server, files=files, fields={"mode": "composite", "format": "jpeg"})
    img = as_image(r)
    assert img.format == "JPEG" and img.size == images.SUBJECT_SIZE


def test_served_mask_equals_in_process_mask(torchserve_server, serving_checkpoint: Path) -> None:
    """Same size as the photo, and the same values as ``Segmenter.predict`` (within 1 level).
    The odd inputs (EXIF-rotated, CMYK, 16-bit, ...) get the same check in test_corpus.py."""
    data = PNG
    served = np.asarray(as_image(post(torchserve_server, data)))
    photo = imaging.decode_image(data)
    assert served.shape == (photo.height, photo.width) == (240, 360)
    local = Segmenter.from_checkpoint(serving_checkpoint, device="cpu")
    diff = np.abs(served.astype(int) - local.predict([photo])[0].astype(int))
    assert diff.max() <= 1, f"max difference {diff.max()}, {np.count_nonzero(diff)} pixels differ"
    flipped = np.asarray(as_image(post(torchserve_server, data, headers={"X-TTA": "flip"})))
    diff = np.abs(flipped.astype(int) - local.predict([photo], tta="flip")[0].astype(int))
    assert diff.max() <= 1, f"tta=flip: max difference {diff.max()}, {np.count_nonzero(diff)} pixels differ"


def test_cutout_keeps_every_photo_pixel(torchserve_server) -> None:
    """With the edge stage off (``X-Matting: off``): the photo's pixels and the served mask, unchanged."""
    mask = np.asarray(as_image(post(torchserve_server, PNG)))
    cut = np.asarray(as_image(post(torchserve_server, PNG, headers={"X-Mode": "cutout", "X-Matting": "off"})))
    np.testing.assert_array_equal(cut[..., :3], np.asarray(images.subject_photo()))
    np.testing.assert_array_equal(cut[..., 3], mask)


def test_edge_stage_over_http(torchserve_server) -> None:
    """On by default for cutout and composite: the served composite is the served cut-out (soft matte,
    estimated colours) blended onto the colour; it differs from ``matting=off`` only near the outline,
    and the mask mode is not touched. Its effect on edge colours: tests/handler/test_handler.py."""
    photo = np.asarray(images.subject_photo())
    mask = np.asarray(as_image(post(torchserve_server, PNG)))
    cut = np.asarray(as_image(post(torchserve_server, files={"image": ("p.png", PNG, "image/png")},
                                   fields={"mode": "cutout"})), np.float32)
    on = np.asarray(as_image(post(torchserve_server, PNG, headers={"X-Mode": "composite", "X-Background": "#fff"})))
    off = np.asarray(as_image(post(torchserve_server, PNG, headers={"X-Mode": "composite", "X-Background": "#fff",
                                                                    "X-Matting": "off"})))
    blended = cut[..., :3] * cut[..., 3:] / 255 + 255 * (1 - cut[..., 3:] / 255)
    assert np.abs(blended - on).max() <= 1.0
    far = (mask == 0) | (mask == 255)
    far &= np.roll(far, 8, 0) & np.roll(far, -8, 0) & np.roll(far, 8, 1) & np.roll(far, -8, 1)
    np.testing.assert_array_equal(on[far], off[far])
    np.testing.assert_array_equal(cut[..., :3][far & (mask == 255)], photo[far & (mask == 255)])


def test_bad_options_are_4xx_json_and_the_worker_survives(torchserve_server) -> None:
    """Bad option values and fields; bad files (empty, truncated, bombs, ...) are in test_corpus.py."""
    before = worker_pids(torchserve_server)
    cases = [
        (post(torchserve_server, PNG, headers={"X-Mode": "sketch"}), 400, "unknown mode"),
        (post(torchserve_server, PNG, headers={"X-Background": "purple-ish"}), 400, "unknown background"),
        (post(torchserve_server, PNG, headers={"X-Mode": "cutout", "X-Matting": "yes"}), 400, "unknown matting"),
        (post(torchserve_server, files={"photo": ("p.png", PNG, "image/png")}), 400, "unknown multipart field"),
    ]
    for r, status, words in cases:
        assert r.status_code == status, (words, r.status_code, r.text[:200])
        assert r.headers["Content-Type"].startswith("application/json")
        assert words in r.json()["error"], r.json()
    assert as_image(post(torchserve_server, PNG)).size == images.SUBJECT_SIZE
    assert worker_pids(torchserve_server) == before  # no worker died and restarted


def test_query_parameters_do_not_reach_the_handler(torchserve_server) -> None:
    """A TorchServe limitation the API documents: ``?mode=cutout`` is ignored on /predictions."""
    r = post(torchserve_server, PNG, model=f"{torchserve_server.model_name}?mode=cutout")
    assert as_image(r).mode == "L"


def test_metrics_are_prometheus_text(torchserve_server) -> None:
    post(torchserve_server, PNG)
    r = requests.get(f"{torchserve_server.metrics_url}/metrics", timeout=30)
    assert r.status_code == 200 and "ts_inference_requests_total" in r.text


def test_management_workflow_and_mixed_batch(torchserve_server) -> None:
    """Register a batching archive, check a mixed batch, scale, describe, unregister."""
    mgmt, auth = torchserve_server.management_url, torchserve_server.auth("management")
    r = requests.post(f"{mgmt}/models", headers=auth, timeout=180,
                      params={"url": f"{BATCH_MODEL_NAME}.mar", "initial_workers": 1, "synchronous": "true"})
    assert r.status_code == 200, r.text
    try:
        again = requests.post(f"{mgmt}/models", params={"url": f"{BATCH_MODEL_NAME}.mar"}, headers=auth, timeout=60)
        assert again.status_code == 409, again.text
        missing = requests.post(f"{mgmt}/models", params={"url": "no_such_model.mar"}, headers=auth, timeout=60)
        assert missing.status_code == 404, missing.text
        d = describe(torchserve_server, BATCH_MODEL_NAME).json()[0]
        assert d["batchSize"] == BATCH_SETTINGS["batchSize"]
        assert d["maxBatchDelay"] == BATCH_SETTINGS["maxBatchDelay"]

        # four concurrent requests, two of them bad, of different sizes: one batch, per-request answers
        bodies = [PNG, b"junk", images.encode(images.noise_photo((500, 120), seed=2), "JPEG"), b""]
        results: list[requests.Response | None] = [None] * 4
        barrier = threading.Barrier(4)

        def send(i: int) -> None:
            barrier.wait()
            results[i] = post(torchserve_server, bodies[i], model=BATCH_MODEL_NAME)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert [r.status_code for r in results] == [200, 400, 200, 400], [r.text[:100] for r in results]
        assert as_image(results[0]).size == (360, 240) and as_image(results[2]).size == (500, 120)
        assert "not an image" in results[1].json()["error"] and "empty" in results[3].json()["error"]
        assert int(results[0].headers["X-Batch-Size"]) > 1, "requests were not batched"

        r = requests.put(f"{mgmt}/models/{BATCH_MODEL_NAME}", headers=auth, timeout=180,
                         params={"min_worker": 2, "max_worker": 2, "synchronous": "true"})
        assert r.status_code == 200, r.text
        assert len(worker_pids(torchserve_server, BATCH_MODEL_NAME)) == 2
        r = requests.put(f"{mgmt}/models/{BATCH_MODEL_NAME}", headers=auth, timeout=180,
                         params={"min_worker": 1, "max_worker": 1, "synchronous": "true"})
        assert r.status_code == 200 and len(worker_pids(torchserve_server, BATCH_MODEL_NAME)) == 1
    finally:
        r = requests.delete(f"{mgmt}/models/{BATCH_MODEL_NAME}", headers=auth, timeout=120)
    assert r.status_code == 200, r.text
    assert describe(torchserve_server, BATCH_MODEL_NAME).status_code == 404
    assert as_image(post(torchserve_server, PNG)).mode == "L"  # the main model is untouched


def test_rotating_the_inference_key(torchserve_server) -> None:
    old = torchserve_server.inference_key
    new = serve.rotate_key(torchserve_server)
    assert new != old and torchserve_server.inference_key == new
    r = requests.post(torchserve_server.predictions_url, data=PNG, timeout=30,
                      headers={"Content-Type": "image/png", "Authorization": f"Bearer {old}"})
    assert r.status_code in (400, 401) and "InvalidKeyException" in r.text
    assert as_image(post(torchserve_server, PNG)).mode == "L"


def test_batch_client_reports_errors_and_never_overwrites(torchserve_server, tmp_path: Path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        images.subject_photo(seed=i).save(src / f"photo{i}.jpg", quality=92)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    args = [str(src), "--out", str(out), "--url", torchserve_server.inference_url,
            "--key-file", str(torchserve_server.key_file), "--background", "#336699"]
    assert client_mod.main(args) == 1  # one file failed
    err = capsys.readouterr().err
    assert "broken.png FAILED: HTTP 400" in err and "3 done, 0 skipped, 1 failed" in err
    outputs = sorted(p.name for p in out.iterdir())
    assert outputs == ["photo0.png", "photo1.png", "photo2.png"]
    assert Image.open(out / "photo0.png").size == images.SUBJECT_SIZE
    stamp = (out / "photo0.png").stat().st_mtime_ns
    assert client_mod.main(args[:-2] + ["--mode", "cutout"]) == 1
    assert "0 done, 3 skipped, 1 failed" in capsys.readouterr().err
    assert (out / "photo0.png").stat().st_mtime_ns == stamp
    assert client_mod.main([str(src / "photo0.jpg"), *args[1:], "--overwrite", "--format", "jpeg"]) == 0
    assert Image.open(out / "photo0.jpg").format == "JPEG"


def test_batch_client_matting_option(torchserve_server, tmp_path: Path) -> None:
    """``--matting off`` gives the plain cut-out (the photo's own pixels, the mask as alpha); the default
    (on) changes colours near the outline only, and its alpha is softer."""
    # a real photo: the shipped model finds no person in the synthetic one, and then there is no edge
    photo = Image.open(Path(__file__).resolve().parents[1] / "gimp" / "data" / "astronaut.jpg").convert("RGB")
    src = tmp_path / "photo.png"
    photo.save(src)
    common = [str(src), "--url", torchserve_server.inference_url, "--key-file", str(torchserve_server.key_file),
              "--mode", "cutout"]
    assert client_mod.main([*common, "--out", str(tmp_path / "off"), "--matting", "off"]) == 0
    assert client_mod.main([*common, "--out", str(tmp_path / "on")]) == 0
    off = np.asarray(Image.open(tmp_path / "off" / "photo.png"))
    on = np.asarray(Image.open(tmp_path / "on" / "photo.png"))
    np.testing.assert_array_equal(off[..., :3], np.asarray(photo))
    soft = lambda a: np.count_nonzero((a > 0) & (a < 255))  # noqa: E731
    assert soft(on[..., 3]) > soft(off[..., 3])
    assert not np.array_equal(on[..., :3], off[..., :3])


def test_zoom_over_http_and_from_the_client(torchserve_server, serving_checkpoint: Path, tmp_path: Path) -> None:
    """``X-Zoom`` and ``--zoom`` reach the worker: each served mask equals ``Segmenter.predict`` with that zoom,
    "on" differs from "off", and an unknown value is a 400 naming the choices."""
    local = Segmenter.from_checkpoint(serving_checkpoint, device="cpu")
    # a real photo: the shipped model finds no person in the synthetic one, and then there is nothing to zoom into
    data = images.encode(Image.open(ASTRONAUT).convert("RGB"))
    photo = imaging.decode_image(data)
    masks = {}
    for zoom in ("off", "on"):
        masks[zoom] = np.asarray(as_image(post(torchserve_server, data, headers={"X-Zoom": zoom})))
        diff = np.abs(masks[zoom].astype(int) - local.predict([photo], zoom=zoom)[0].astype(int))
        assert diff.max() <= 1, f"zoom={zoom}: max difference {diff.max()}"
    assert not np.array_equal(masks["on"], masks["off"])
    r = post(torchserve_server, PNG, headers={"X-Zoom": "8x"})
    assert r.status_code == 400 and "unknown zoom '8x'; expected one of: off, auto, on" in r.json()["error"]
    src = tmp_path / "photo.png"
    src.write_bytes(data)
    common = [str(src), "--url", torchserve_server.inference_url, "--key-file", str(torchserve_server.key_file),
              "--mode", "mask", "--zoom", "on"]
    assert client_mod.main([*common, "--out", str(tmp_path / "on")]) == 0
    assert np.abs(np.asarray(Image.open(tmp_path / "on" / "photo.png")).astype(int) - masks["on"]).max() <= 1


@pytest.mark.skipif(not crowd.SHIPPED_CROWD.is_file(), reason="no shipped crowd network in this checkout")
def test_crowd_over_http_and_from_the_client(torchserve_server, serving_checkpoint: Path, tmp_path: Path) -> None:
    """The archive carries the crowd network: a group photo gets its look by default, a portrait the main
    network's, ``X-Crowd``/``--crowd`` choose, ``X-Network`` says which, and every served mask equals
    ``Segmenter.predict`` with the same setting."""
    local = Segmenter.from_checkpoint(serving_checkpoint, device="cpu")
    assert local.crowd_model is not None
    several = images.encode(group_photo(Image.open(ASTRONAUT), 0.54))  # four people a quarter of its height
    portrait = images.encode(Image.open(ASTRONAUT).convert("RGB"))
    masks = {}
    cases = (("group", several, {}, "crowd"), ("group off", several, {"X-Crowd": "off"}, "main"),
             ("portrait", portrait, {}, "main"))
    for name, data, headers, network in cases:
        r = post(torchserve_server, data, headers=headers)
        assert r.status_code == 200 and r.headers["X-Network"] == network, (name, r.headers.get("X-Network"))
        masks[name] = np.asarray(as_image(r))
        expected = local.predict([imaging.decode_image(data)], crowd=headers.get("X-Crowd", "auto"))[0]
        assert np.abs(masks[name].astype(int) - expected.astype(int)).max() <= 1, name
    assert not np.array_equal(masks["group"], masks["group off"])
    src = tmp_path / "group.png"
    src.write_bytes(several)
    common = [str(src), "--url", torchserve_server.inference_url, "--key-file", str(torchserve_server.key_file),
              "--mode", "mask"]
    assert client_mod.main([*common, "--crowd", "off", "--out", str(tmp_path / "off")]) == 0
    assert np.abs(np.asarray(Image.open(tmp_path / "off" / "group.png")).astype(int) - masks["group off"]).max() <= 1
    r = post(torchserve_server, PNG, headers={"X-Crowd": "all"})
    assert r.status_code == 400 and "unknown crowd 'all'; expected one of: off, auto, on" in r.json()["error"]


def test_client_library_errors_are_readable(torchserve_server) -> None:
    c = client_mod.Client(torchserve_server.inference_url, key="wrong", key_file=None)
    with pytest.raises(client_mod.ClientError, match="leave --key out"):  # a typed key: how to get a working one
        c.process(PNG)
    c = client_mod.Client(torchserve_server.inference_url, key_file=torchserve_server.key_file)
    with pytest.raises(client_mod.ClientError, match="unknown mode") as info:
        c.process(PNG, mode="sketch")
    assert info.value.status == 400
    assert c.process(PNG, mode="mask").content_type == "image/png"


def test_start_and_stop_leave_nothing_running(tmp_path: Path, served_model_store: Path) -> None:
    """A second instance next to the session one (own folder, TMPDIR, ports); stop ends every process."""
    skip_without_torchserve()
    ports = free_ports(serve.DEFAULT_PORTS)
    server = serve.start_server(tmp_path / "ts", served_model_store, ports=ports)
    try:
        assert group.alive(server.pid) and server.key_file.is_file()
        with pytest.raises(serve.ServeError, match="already running"):
            serve.start_server(tmp_path / "ts", served_model_store, ports=ports)
        assert as_image(post(server, PNG)).mode == "L"
    finally:
        assert serve.stop_server(server.workdir) is True
    assert not group.alive(server.pid)
    assert not server.key_file.exists() and not (server.workdir / serve.STATE_NAME).exists()
    assert serve.stop_server(server.workdir) is False
    cfg = serve.read_properties(server.workdir / "config.properties")
    assert cfg["inference_address"] == f"http://127.0.0.1:{ports['inference']}"
    assert cfg["model_store"] == str(served_model_store)  # token auth and loopback: test_security.py
