"""Preparing the answer: export the layer, ask the server, decode, soften, build the background.

Everything that can fail (the network, a bad answer, an unreadable background image) happens here,
in temporary images, before the user's image is touched; ``replace_background_edit`` then only
arranges what was prepared. GIMP's own PNG export encodes the layer and its PNG loader decodes the
answer, so the plug-in needs no imaging library in GIMP's bundled Python.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
import replace_background_core as core  # noqa: E402
from gi.repository import Gegl, Gimp, Gio  # noqa: E402
from replace_background_pixels import (  # noqa: E402
    Progress,
    TempImages,
    apply_gegl,
    describe_format,
    load_image,
    log,
    read_pixels,
    run_procedure,
    unlink_quietly,
    write_pixels,
)

# alpha -> 255 where the matte is soft (0 < alpha < 255), else 0: the pixels whose colour is a mix of
# person and old background, and the only ones whose colour the edge stage changes that can be seen
SOFT_BAND = bytes([0] + [255] * 254 + [0])
# alpha -> 255 wherever the person shows: Match light changes the colours of the whole person
PERSON = bytes([0] + [255] * 255)
COLOUR_REGIONS = {"edge": SOFT_BAND, "person": PERSON}


@dataclass
class Answer:
    """What the server said about the layer, decoded: the mask GIMP will hold (the soft matte for
    Edge=matte/colours) and, for Edge=colours, a temporary layer holding the person's own colours
    where the matte is soft (opaque there, transparent elsewhere), ready to go over a copy of the photo."""

    mask: bytes
    colours: Gimp.Layer | None = None


@dataclass
class Background:
    """What goes behind the person: a prepared layer (image or blur, in a temporary image) or a colour."""

    layer: Gimp.Layer | None = None
    color: Gegl.Color | None = None


def export_png(layer: Gimp.Layer) -> bytes:
    """The layer's own pixels as an 8-bit PNG, written by GIMP's PNG export (file-png-export).

    The layer is copied into a private image of its own size at 8-bit precision (GIMP converts any
    precision, without dithering), so what is sent is the layer alone: no mask, offsets, opacity,
    mode, visibility, or the layers around it. Metadata and the colour profile are left out: an
    Exif orientation would make the server turn the photo, and its masks are in the layer's pixels.
    Compression level 1: the PNG usually crosses the loopback, where time matters more than bytes.
    """
    w, h = layer.get_width(), layer.get_height()
    base = Gimp.ImageBaseType.GRAY if layer.is_gray() else Gimp.ImageBaseType.RGB
    img = Gimp.Image.new_with_precision(w, h, base, Gimp.Precision.U8_NON_LINEAR)
    fd, path = tempfile.mkstemp(prefix="replace-background-layer-", suffix=".png")
    os.close(fd)
    try:
        copy = Gimp.Layer.new_from_drawable(layer, img)
        img.insert_layer(copy, None, 0)
        if copy.get_mask() is not None:
            copy.remove_mask(Gimp.MaskApplyMode.DISCARD)  # PNG export would apply it to the alpha
        copy.set_offsets(0, 0)
        copy.set_visible(True)
        copy.set_opacity(100.0)
        copy.set_mode(Gimp.LayerMode.NORMAL)
        run_procedure("file-png-export", image=img, file=Gio.File.new_for_path(path), interlaced=False,
                      compression=1, bkgd=False, offs=False, phys=False, time=False, save_transparent=True,
                      optimize_palette=False, include_exif=False, include_iptc=False, include_xmp=False,
                      include_color_profile=False, include_thumbnail=False, include_comment=False)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        img.delete()
        unlink_quietly(path)


def fetch_mask(layer: Gimp.Layer, server: core.ServerSettings, colours: str, grow: int, feather: float,
               progress: Progress, temps: TempImages, background: bytes | None = None) -> Answer:
    """Export the layer, ask the server, decode its answer: the mask and, where ``colours`` says
    (``core.RequestPlan``), the answer's colours. ``background``: the PNG that Match light matches to."""
    w, h = layer.get_width(), layer.get_height()
    core.check_layer_size(w, h)
    progress.stage("encoding the layer as PNG", 0.0, 0.35)
    png = export_png(layer)
    log(f"layer {layer.get_name()!r} {w}x{h}, {len(png)} bytes PNG -> {server.url} (mode={server.mode}, "
        f"zoom={server.zoom}, crowd={server.crowd}, keep={server.keep or 'everyone'}, harmonize={server.harmonize:g})")

    progress.stage(f"waiting for the server at {server.url}", 0.35, 0.6)
    t0 = time.monotonic()
    answer = core.request_mask(server, png, tick=Gimp.progress_pulse, background=background)  # bounded by Timeout
    log(f"answer {len(answer)} bytes in {time.monotonic() - t0:.2f} s")

    progress.stage("decoding the answer", 0.6, 0.7)
    decoded = decode_answer(answer, (w, h), server, temps)
    colour_layer = None
    if server.mode == "mask":
        # The PNG holds plain 0..255 mask values; reading "Y' u8" from the loaded (non-linear) image
        # returns them unchanged.
        mask = read_pixels(decoded, "Y' u8", 1, progress)
    else:
        rgba = read_pixels(decoded, "R'G'B'A u8", 4, progress)
        mask = rgba[3::4]  # the soft matte
        if colours:
            colour_layer = edge_colours(decoded, rgba, mask, layer.get_image(), COLOUR_REGIONS[colours])
    if grow or feather:
        mask = soften_mask(mask, w, h, grow, feather, temps)
    return Answer(mask, colour_layer)


def decode_answer(answer: bytes, size: tuple[int, int], server: core.ServerSettings,
                  temps: TempImages) -> Gimp.Layer:
    """The server's PNG decoded by GIMP's loader into a temporary image, checked against the API."""
    fd, path = tempfile.mkstemp(prefix="replace-background-answer-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(answer)
        fix = "Fix: check that Server URL is this project's TorchServe (port 8080 by default); retry."
        img = temps.add(load_image(Gio.File.new_for_path(path), "answer from the server", fix))
    finally:
        unlink_quietly(path)
    layers = img.get_layers()
    if len(layers) != 1:
        raise core.PluginError(f"The answer from {server.url} has {len(layers)} layers, not one. {fix}")
    decoded = layers[0]
    kind = describe_format(img, decoded)
    core.check_mask_format(kind, (decoded.get_width(), decoded.get_height()), size, server.url, server.mode)
    return decoded


def edge_colours(cutout: Gimp.Layer, rgba: bytes, alpha: bytes, target: Gimp.Image,
                 region: bytes = SOFT_BAND) -> Gimp.Layer:
    """Turn the decoded cut-out into the colours layer: opaque only where ``region`` maps the matte to 255.

    For the edge colours that is where the matte is soft: everywhere else the person layer keeps the
    photo's own pixels at the image's precision, instead of the 8-bit copy the server sent back; Match
    light's colours cover the whole person (``PERSON``). The layer is
    converted to the user's image's mode and precision here, before the edit, so nothing that can
    fail is left for the undo group.
    """
    data = bytearray(rgba)
    data[3::4] = alpha.translate(region)
    write_pixels(cutout, "R'G'B'A u8", bytes(data))
    img = cutout.get_image()
    if target.get_base_type() == Gimp.ImageBaseType.GRAY:
        img.convert_grayscale()
    if img.get_precision() != target.get_precision():
        img.convert_precision(target.get_precision())
    return img.get_layers()[0]


def soften_mask(mask: bytes, w: int, h: int, grow: int, feather: float, temps: TempImages) -> bytes:
    """Grow/shrink (grey-level max/min filter) then feather (Gaussian) the mask in a linear temp image.

    Working in a private linear image keeps the user's selection out of play (filters obey it)
    and keeps soft mask values from being bent by a gamma conversion.
    """
    img = temps.add(Gimp.Image.new_with_precision(w, h, Gimp.ImageBaseType.GRAY, Gimp.Precision.U8_LINEAR))
    layer = Gimp.Layer.new(img, "mask", w, h, Gimp.ImageType.GRAY_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    img.insert_layer(layer, None, 0)
    write_pixels(layer, "Y u8", mask)
    if grow:
        # percentile 100 = maximum in the circle (grow), 0 = minimum (shrink)
        apply_gegl(layer, "gegl:median-blur", radius=abs(grow), percentile=100.0 if grow > 0 else 0.0)
    if feather > 0:
        apply_gegl(layer, "gegl:gaussian-blur", std_dev_x=feather / 2.0, std_dev_y=feather / 2.0)
    return read_pixels(layer, "Y u8", 1, lambda _f: None)


def prepare_background(image: Gimp.Image, layer: Gimp.Layer, kind: str, color: Gegl.Color,
                       image_file: Gio.File | None, blur_radius: float, temps: TempImages) -> Background | None:
    """What the chosen Background needs, ready before the edit: None for Transparent."""
    if kind == "image":
        return Background(layer=_cover_image(image, layer, image_file, temps))
    if kind == "blur":
        return Background(layer=_blurred_copy(image, layer, blur_radius, temps))
    if kind == "color":
        return Background(color=color)
    return None


def _cover_image(image: Gimp.Image, layer: Gimp.Layer, image_file: Gio.File, temps: TempImages) -> Gimp.Layer:
    """The background image in the photo's mode and precision, scaled to cover the layer, centred and cropped."""
    w, h = layer.get_width(), layer.get_height()
    fix = "Fix: choose a readable image file (JPEG, PNG, ...) as Background image."
    src = temps.add(load_image(image_file, "background image", fix))
    if src.get_base_type() != image.get_base_type():
        if image.get_base_type() == Gimp.ImageBaseType.GRAY:
            src.convert_grayscale()
        else:
            src.convert_rgb()
    if src.get_precision() != image.get_precision():
        src.convert_precision(image.get_precision())
    if src.merge_visible_layers(Gimp.MergeType.CLIP_TO_IMAGE) is None:
        raise core.PluginError("The background image has no visible layer. " + fix)
    sw, sh = src.get_width(), src.get_height()
    scale = max(w / sw, h / sh)  # cover the layer, then crop the overflow evenly
    nw, nh = max(w, round(sw * scale)), max(h, round(sh * scale))
    Gimp.context_push()
    try:
        Gimp.context_set_interpolation(Gimp.InterpolationType.CUBIC)
        src.scale(nw, nh)
    finally:
        Gimp.context_pop()
    src.crop(w, h, (nw - w) // 2, (nh - h) // 2)
    return src.get_layers()[0]


def _blurred_copy(image: Gimp.Image, layer: Gimp.Layer, blur_radius: float, temps: TempImages) -> Gimp.Layer:
    """The photo layer blurred (radius 0: the server's default for the layer's size), in a duplicate image."""
    # A duplicate keeps the photo's colour profile, precision and type exactly; tattoos survive it.
    dup = temps.add(image.duplicate())
    copy = dup.get_layer_by_tattoo(layer.get_tattoo())
    if copy is None:
        raise core.PluginError("GIMP could not copy the layer for the blurred background. Fix: retry.")
    Gimp.Selection.none(dup)
    if copy.get_mask() is not None:
        copy.remove_mask(Gimp.MaskApplyMode.DISCARD)
    radius = blur_radius or core.default_blur_radius(layer.get_width(), layer.get_height())
    apply_gegl(copy, "gegl:gaussian-blur", std_dev_x=radius, std_dev_y=radius)
    return copy
