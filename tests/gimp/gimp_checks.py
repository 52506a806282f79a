"""What the GIMP end-to-end tests check, shared by their modules: reading what GIMP wrote, asking the
real server for the same layer, and comparing (masks exactly, composites as GIMP blends in linear light)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import requests
from gimp_harness import GimpRun
from PIL import Image

HERE = Path(__file__).resolve().parent
PHOTO = HERE / "data" / "astronaut.jpg"
BLUE = "#00c0ff"
BLUE_RGB = (0, 192, 255)
BLUE_BACKGROUND = {"background": "color", "background-color": BLUE}


def server_args(server: object) -> dict:
    """The procedure's arguments that point it at the real TorchServe (``torchserve_server``)."""
    return {"server-url": server.inference_url, "model-name": server.model_name, "inference-key": server.inference_key}


def two_colour_image(path: Path) -> Path:
    """A 300x100 image, left half red, right half green: wide, so 'cover' must crop its sides."""
    arr = np.zeros((100, 300, 3), np.uint8)
    arr[:, :150] = (220, 20, 20)
    arr[:, 150:] = (20, 220, 20)
    Image.fromarray(arr).save(path)
    return path


# --- helpers to read what GIMP wrote -------------------------------------------------------------


def layer_pixels(run: GimpRun, case: dict) -> np.ndarray:
    w, h = case["layer"]["size"]
    return np.fromfile(run.path(case["name"] + ".layer.rgba"), np.uint8).reshape(h, w, 4)


def gimp_mask(run: GimpRun, case: dict) -> np.ndarray:
    w, h = case["mask_size"]
    return np.fromfile(run.path(case["name"] + ".mask.y8"), np.uint8).reshape(h, w)


def exported(case: dict, run: GimpRun) -> np.ndarray:
    return np.asarray(Image.open(run.path(Path(case["export"]).name)).convert("RGBA"))


def _ask_server(server: object, rgba: np.ndarray, headers: dict[str, str], mode: str) -> np.ndarray:
    """POST exactly these layer pixels to the real server, as the plug-in sends them (RGB for layers without
    alpha), with ``headers``; the answer decoded, after checking that it is a PNG of Pillow mode ``mode``."""
    img = Image.fromarray(rgba, "RGBA")
    if (rgba[..., 3] == 255).all():
        img = img.convert("RGB")  # the plug-in sends RGB for layers without alpha
    buf = io.BytesIO()
    img.save(buf, "PNG")
    resp = requests.post(
        f"{server.inference_url}/predictions/{server.model_name}",
        data=buf.getvalue(),
        headers={"Content-Type": "image/png", "Authorization": f"Bearer {server.inference_key}", **headers},
        timeout=300,
    )
    assert resp.status_code == 200, resp.text[:500]
    answer = Image.open(io.BytesIO(resp.content))
    assert answer.mode == mode
    return np.asarray(answer)


def server_mask(server: object, rgba: np.ndarray, tta: str = "flip") -> np.ndarray:
    """Ask the real server for the mask of exactly these layer pixels (as the plug-in sends them,
    with its default Mirror pass, unless ``tta`` says otherwise)."""
    return _ask_server(server, rgba, {"X-Mode": "mask", "X-TTA": tta}, "L")


def server_cutout(server: object, rgba: np.ndarray, tta: str = "flip") -> np.ndarray:
    """The real server's cut-out with the edge stage (mode=cutout, matting=on) for these layer pixels:
    what Edge=matte and Edge=colours ask for. Alpha is the soft matte, RGB the person's colours."""
    return _ask_server(server, rgba, {"X-Mode": "cutout", "X-Matting": "on", "X-TTA": tta}, "RGBA")


def result_pixels(run: GimpRun, case: dict) -> np.ndarray:
    """The pixels of the layer holding the person (the procedure's first return value)."""
    w, h = case["result_size"]
    return np.fromfile(run.path(case["name"] + ".result.rgba"), np.uint8).reshape(h, w, 4)


def assert_person_colours(person: np.ndarray, photo: np.ndarray, alpha: np.ndarray, colours: np.ndarray) -> None:
    """Edge=colours: where the matte is soft the person layer holds the given colours, elsewhere the photo's."""
    soft = (alpha > 0) & (alpha < 255)
    assert soft.any(), "no soft edge in the matte"
    assert np.abs(person[soft][:, :3].astype(int) - colours[soft][:, :3]).max() <= 1, "edge colours not used"
    assert np.array_equal(person[~soft], photo[~soft]), "pixels away from the soft edge must be the photo's"


def assert_same_mask(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() == 0, f"mask differs: max {diff.max()}, {np.count_nonzero(diff)} pixels of {diff.size}"


def successful(run: GimpRun, name: str) -> dict:
    """Case ``name`` of ``run``, once its call succeeded: a failed call fails the test with the plug-in's error."""
    case = run.case(name)
    assert case["status"] == "success", case.get("error")
    return case


def photo_and_mask(run: GimpRun, case: dict, server: object, tta: str = "flip") -> tuple[np.ndarray, np.ndarray]:
    """The layer's pixels and GIMP's layer mask, after checking that the mask is exactly the server's for them."""
    photo = layer_pixels(run, case)
    mask = gimp_mask(run, case)
    assert_same_mask(mask, server_mask(server, photo, tta))
    return photo, mask


def photo_and_matte(run: GimpRun, case: dict, server: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As ``photo_and_mask`` for the default Edge refinement: the layer's pixels, GIMP's layer mask and the
    server's cut-out, after checking that the mask is exactly the cut-out's alpha (the soft matte)."""
    photo = layer_pixels(run, case)
    mask = gimp_mask(run, case)
    cut = server_cutout(server, photo)
    assert_same_mask(mask, cut[..., 3])
    return photo, mask, cut


def background_pixels(run: GimpRun, case: dict) -> np.ndarray:
    """The background layer the plug-in made (Output=mask), as GIMP holds it."""
    w, h = case["background_size"]
    return np.fromfile(run.path(case["name"] + ".background.rgba"), np.uint8).reshape(h, w, 4)


def to_linear(c: np.ndarray) -> np.ndarray:
    c = c / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return 255.0 * np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def assert_composite(comp: np.ndarray, photo: np.ndarray, mask: np.ndarray, background: object) -> None:
    """Every pixel is the photo over the background through the mask, as GIMP composites (linear light).

    This holds for any model, even an untrained one whose mask is 0.5 everywhere; where the mask
    is 0 the pixel must be exactly the background (the chosen colour), where 255 exactly the photo.
    """
    bg = np.broadcast_to(np.asarray(background, np.float64)[..., :3], photo[..., :3].shape)
    m = (mask.astype(np.float64) / 255.0)[..., None]
    want = to_srgb(m * to_linear(photo[..., :3].astype(np.float64)) + (1 - m) * to_linear(bg))
    got = comp[..., :3].astype(np.float64)
    diff = np.abs(got - want)
    assert diff.max() <= 2.01, (
        f"composite differs from photo-over-background by up to {diff.max():.1f} "
        f"({np.count_nonzero(diff.max(-1) > 2.01)} pixels)"
    )
    for sel, ref, what in ((mask == 0, bg, "background"), (mask == 255, photo[..., :3], "person")):
        if sel.any():
            assert np.abs(got[sel] - ref[sel]).max() <= 1, f"{what} pixels are not exact"
    assert (comp[..., 3] == 255).all()
    print(f"mask: {np.mean(mask == 0):.1%} background, {np.mean(mask == 255):.1%} person, rest soft")

