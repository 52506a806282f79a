#!/usr/bin/env python3
#
# Replace Background... - a GIMP 3 plug-in of the replace-background project (MIT licence).
#
# Sends the selected layer to the project's own TorchServe (on your machine; nothing goes to a
# third party), gets back the person's soft matte and edge colours (docs/API.md, mode=cutout with
# the edge stage) or the plain mask (mode=mask), and builds the result in GIMP as editable layers:
# a layer mask on the photo (or on a copy holding the person's own edge colours) plus a colour /
# image / blurred background layer under it, or a new composite layer, or the composite applied
# in place. One undo step.
#
# The HTTP and error-message code lives in replace_background_core.py next to this file
# (standard library only, tested outside GIMP); this file does the GIMP work, PNG included:
# GIMP's own PNG export encodes the layer and its PNG loader decodes the mask.
"""GIMP 3 plug-in "Replace Background...": procedure ``python-fu-replace-background``."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

# The plug-in folder may be read-only (system-wide or Flatpak installs): do not write __pycache__.
sys.dont_write_bytecode = True
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gegl", "0.4")
import replace_background_core as core  # noqa: E402
from gi.repository import Gegl, Gimp, GimpUi, Gio, GLib, GObject  # noqa: E402

PROC_NAME = "python-fu-replace-background"
MENU_PATH = "<Image>/Filters/Enhance"
BACKGROUND_LAYER_NAME = "Background (Replace Background)"
DEFAULT_COLOR = "white"  # like the server's composite default (#FFFFFF)
# Test hook: REPLACE_BACKGROUND_FAULT=edit raises in the middle of the edit, so the tests can prove
# that a failure half-way through leaves the image as it was. Never set by users.
_FAULT_ENV = "REPLACE_BACKGROUND_FAULT"

BACKGROUNDS = (
    ("transparent", "Transparent (mask only)"),
    ("color", "Colour"),
    ("image", "Image file (scaled to cover)"),
    ("blur", "Blurred copy of the photo"),
)
EDGES = (
    ("colours", "Soft matte + the person's own colours (masked copy)"),
    ("matte", "Soft matte (the photo's pixels untouched)"),
    ("off", "The model's mask as it is"),
)
OUTPUTS = (
    ("mask", "Layer mask on the photo + background layer (non-destructive)"),
    ("new-layer", "New layer with the composite"),
    ("apply", "Apply to the layer (destructive)"),
)


def _log(*parts: object) -> None:
    """Diagnostics go to stderr, which GIMP shows in a terminal or its error console."""
    print("[replace-background]", *parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Options and progress
# ---------------------------------------------------------------------------------------------


@dataclass
class Options:
    """The procedure's arguments, read once from the config so the rest never touches GObject props."""

    server: core.ServerSettings
    background: str
    color: Gegl.Color
    image_file: Gio.File | None
    blur_radius: float
    output: str
    grow: int
    feather: float
    edge: str = "colours"

    @classmethod
    def from_config(cls, config: Gimp.ProcedureConfig) -> Options:
        key_file = config.get_property("key-file")
        key_path = None
        if key_file is not None:
            key_path = key_file.get_path()
            if key_path is None:
                raise core.PluginError(
                    f"Key file {key_file.get_uri()} is not a local file. "
                    "Fix: choose the key_file.json on this computer."
                )
        edge = config.get_property("edge")
        # Options left at their defaults mean this project's own server, found through install.sh's record.
        server = core.resolve_server(
            config.get_property("server-url"),
            config.get_property("model-name"),
            config.get_property("inference-key"),
            key_path,
            project=core.project_folder(_HERE),
            timeout=float(config.get_property("timeout")),
            tta="flip" if config.get_property("mirror-pass") else "none",
            mode=core.EDGE_MODES[edge],
        )
        core.predictions_url(server.url, server.model)  # validate before any pixel is read
        opts = cls(
            server=server,
            background=config.get_property("background"),
            color=_color_or_default(config.get_property("background-color")),
            image_file=config.get_property("background-image"),
            blur_radius=float(config.get_property("blur-radius")),
            output=config.get_property("output"),
            grow=int(config.get_property("grow")),
            feather=float(config.get_property("feather")),
            edge=edge,
        )
        if opts.background == "image" and opts.image_file is None:
            raise core.PluginError(
                "Background is 'Image file' but no Background image was chosen. "
                "Fix: choose an image file, or pick another Background."
            )
        return opts


def _color_or_default(color: Gegl.Color | None) -> Gegl.Color:
    """The chosen colour, or the documented default (white) when GIMP lost it.

    GIMP 3.0 does not carry a colour argument's default over the PDB: a script that leaves
    ``background-color`` unset hands us transparent black (0, 0, 0, 0). The argument has no
    alpha, so that value can only mean "unset".
    """
    if color is None or tuple(color.get_rgba()) == (0.0, 0.0, 0.0, 0.0):
        return Gegl.Color.new(DEFAULT_COLOR)
    return color


@dataclass
class Progress:
    """Maps the stages of a run onto one progress bar, so a 24-megapixel photo shows steady movement."""

    start: float = 0.0
    span: float = 1.0
    last: float = field(default=-1.0)

    def stage(self, text: str, start: float, end: float) -> None:
        Gimp.progress_set_text(f"Replace Background: {text}")
        self.start, self.span, self.last = start, end - start, -1.0
        self(0.0)

    def __call__(self, fraction: float) -> None:
        value = self.start + self.span * max(0.0, min(1.0, fraction))
        if value - self.last >= 0.005 or fraction >= 1.0:
            Gimp.progress_update(value)
            self.last = value


# ---------------------------------------------------------------------------------------------
# Pixels in and out of GIMP
# ---------------------------------------------------------------------------------------------


def _read_pixels(drawable: Gimp.Drawable, fmt: str, bpp: int, progress: Callable[[float], None]) -> bytes:
    """Read a drawable's own pixels (its local coordinates) in strips, so progress moves on big layers."""
    w, h = drawable.get_width(), drawable.get_height()
    buf = drawable.get_buffer()
    step = max(1, (8 << 20) // max(1, w * bpp))
    parts = []
    for y in range(0, h, step):
        n = min(step, h - y)
        parts.append(bytes(buf.get(Gegl.Rectangle.new(0, y, w, n), 1.0, fmt, Gegl.AbyssPolicy.CLAMP)))
        progress((y + n) / h)
    return b"".join(parts)


def _write_pixels(drawable: Gimp.Drawable, fmt: str, data: bytes) -> None:
    """Write a whole drawable in one go and tell GIMP to redraw it."""
    w, h = drawable.get_width(), drawable.get_height()
    buf = drawable.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, w, h), fmt, data)
    buf.flush()
    drawable.update(0, 0, w, h)


def _apply_gegl(drawable: Gimp.Drawable, operation: str, **props: object) -> None:
    """Run one GEGL operation on a drawable and merge it (used only on our own temporary images)."""
    flt = Gimp.DrawableFilter.new(drawable, operation, "")
    cfg = flt.get_config()
    for name, value in props.items():
        cfg.set_property(name.replace("_", "-"), value)
    drawable.merge_filter(flt)


def _load_image(gfile: Gio.File, what: str, fix: str) -> Gimp.Image:
    """``Gimp.file_load`` with a message that says which file and what to do, instead of a bare None."""
    try:
        img = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, gfile)
    except GLib.Error as exc:
        name = gfile.get_parse_name()
        raise core.PluginError(f"GIMP could not open the {what} {name} ({exc.message}). {fix}") from None
    if img is None:
        raise core.PluginError(f"GIMP could not open the {what} {gfile.get_parse_name()}. {fix}")
    return img


class TempImages:
    """Images that only live during a run (decoded mask, prepared background); always deleted."""

    def __init__(self) -> None:
        self.images: list[Gimp.Image] = []

    def add(self, image: Gimp.Image) -> Gimp.Image:
        self.images.append(image)
        return image

    def close(self) -> None:
        for img in self.images:
            try:
                if img.is_valid():
                    img.delete()
            except Exception as exc:  # cleanup must not hide the real outcome
                _log("could not delete a temporary image:", exc)
        self.images.clear()


# ---------------------------------------------------------------------------------------------
# Preparation: everything that can fail happens here, before the user's image is touched
# ---------------------------------------------------------------------------------------------


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
        _run_procedure("file-png-export", image=img, file=Gio.File.new_for_path(path), interlaced=False,
                       compression=1, bkgd=False, offs=False, phys=False, time=False, save_transparent=True,
                       optimize_palette=False, include_exif=False, include_iptc=False, include_xmp=False,
                       include_color_profile=False, include_thumbnail=False, include_comment=False)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        img.delete()
        _unlink(path)


def _run_procedure(name: str, **args: object) -> None:
    """Run a PDB procedure non-interactively with ``args`` (underscores for dashes); raise on failure."""
    procedure = Gimp.get_pdb().lookup_procedure(name)
    if procedure is None:
        raise core.PluginError(f"GIMP has no procedure {name!r}. Fix: reinstall GIMP with its file plug-ins.")
    config = procedure.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    for key, value in args.items():
        config.set_property(key.replace("_", "-"), value)
    result = procedure.run(config)
    if result.index(0) != Gimp.PDBStatusType.SUCCESS:
        said = result.index(1) if result.length() > 1 else ""
        raise core.PluginError(f"GIMP's {name} failed ({said or result.index(0).value_nick}). Fix: retry; "
                               "check that the temporary folder has free space.")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def describe_format(image: Gimp.Image, layer: Gimp.Layer) -> str:
    """What a decoded PNG holds, in the words of the mask check, e.g. "8-bit greyscale" or "16-bit RGB"."""
    bits = {"u8": "8-bit", "u16": "16-bit", "u32": "32-bit", "half": "16-bit float", "float": "32-bit float",
            "double": "64-bit float"}
    component, _, trc = image.get_precision().value_nick.partition("-")  # e.g. "u8", "non-linear"
    kind = {Gimp.ImageBaseType.GRAY: "greyscale", Gimp.ImageBaseType.RGB: "RGB",
            Gimp.ImageBaseType.INDEXED: "palette"}.get(image.get_base_type(), "unknown")
    alpha = "+alpha" if layer.has_alpha() else ""
    linear = " linear" if trc == "linear" else ""  # 8-bit linear values would not read back as they are
    return f"{bits.get(component, component)}{linear} {kind}{alpha}"


@dataclass
class Answer:
    """What the server said about the layer, decoded: the mask GIMP will hold (the soft matte for
    Edge=matte/colours) and, for Edge=colours, a temporary layer holding the person's own colours
    where the matte is soft (opaque there, transparent elsewhere), ready to go over a copy of the photo."""

    mask: bytes
    colours: Gimp.Layer | None = None


# alpha -> 255 where the matte is soft (0 < alpha < 255), else 0: the pixels whose colour is a mix of
# person and old background, and the only ones whose colour the edge stage changes that can be seen
SOFT_BAND = bytes([0] + [255] * 254 + [0])


def fetch_mask(layer: Gimp.Layer, opts: Options, progress: Progress, temps: TempImages) -> Answer:
    """Export the layer, ask the server, decode its answer: the mask and, for Edge=colours, the colours."""
    w, h = layer.get_width(), layer.get_height()
    core.check_layer_size(w, h)
    progress.stage("encoding the layer as PNG", 0.0, 0.35)
    png = export_png(layer)
    _log(f"layer {layer.get_name()!r} {w}x{h}, {len(png)} bytes PNG -> {opts.server.url} (mode={opts.server.mode})")

    progress.stage(f"waiting for the server at {opts.server.url}", 0.35, 0.6)
    t0 = time.monotonic()
    answer = core.request_mask(opts.server, png, tick=Gimp.progress_pulse)  # bounded by Timeout as a whole
    _log(f"answer {len(answer)} bytes in {time.monotonic() - t0:.2f} s")

    progress.stage("decoding the answer", 0.6, 0.7)
    decoded = decode_answer(answer, (w, h), opts, temps)
    colours = None
    if opts.server.mode == "mask":
        # The PNG holds plain 0..255 mask values; reading "Y' u8" from the loaded (non-linear) image
        # returns them unchanged.
        mask = _read_pixels(decoded, "Y' u8", 1, progress)
    else:
        rgba = _read_pixels(decoded, "R'G'B'A u8", 4, progress)
        mask = rgba[3::4]  # the soft matte
        if opts.edge == "colours":
            colours = edge_colours(decoded, rgba, mask, layer.get_image())
    if opts.grow or opts.feather:
        mask = soften_mask(mask, w, h, opts.grow, opts.feather, temps)
    return Answer(mask, colours)


def decode_answer(answer: bytes, size: tuple[int, int], opts: Options, temps: TempImages) -> Gimp.Layer:
    """The server's PNG decoded by GIMP's loader into a temporary image, checked against the API."""
    fd, path = tempfile.mkstemp(prefix="replace-background-answer-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(answer)
        fix = "Fix: check that Server URL is this project's TorchServe (port 8080 by default); retry."
        img = temps.add(_load_image(Gio.File.new_for_path(path), "answer from the server", fix))
    finally:
        _unlink(path)
    layers = img.get_layers()
    if len(layers) != 1:
        raise core.PluginError(f"The answer from {opts.server.url} has {len(layers)} layers, not one. {fix}")
    decoded = layers[0]
    kind = describe_format(img, decoded)
    core.check_mask_format(kind, (decoded.get_width(), decoded.get_height()), size, opts.server.url,
                           opts.server.mode)
    return decoded


def edge_colours(cutout: Gimp.Layer, rgba: bytes, alpha: bytes, target: Gimp.Image) -> Gimp.Layer:
    """Turn the decoded cut-out into the colours layer: opaque only where the matte is soft.

    Only those pixels take the server's colours: everywhere else the person layer keeps the photo's
    own pixels at the image's precision, instead of the 8-bit copy the server sent back. The layer is
    converted to the user's image's mode and precision here, before the edit, so nothing that can
    fail is left for the undo group.
    """
    data = bytearray(rgba)
    data[3::4] = alpha.translate(SOFT_BAND)
    _write_pixels(cutout, "R'G'B'A u8", bytes(data))
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
    _write_pixels(layer, "Y u8", mask)
    if grow:
        # percentile 100 = maximum in the circle (grow), 0 = minimum (shrink)
        _apply_gegl(layer, "gegl:median-blur", radius=abs(grow), percentile=100.0 if grow > 0 else 0.0)
    if feather > 0:
        _apply_gegl(layer, "gegl:gaussian-blur", std_dev_x=feather / 2.0, std_dev_y=feather / 2.0)
    return _read_pixels(layer, "Y u8", 1, lambda _f: None)


def prepare_background(
    image: Gimp.Image, layer: Gimp.Layer, opts: Options, temps: TempImages
) -> Gimp.Layer | None:
    """Build the image/blur background in a temporary image; return its layer (None for colour/transparent)."""
    w, h = layer.get_width(), layer.get_height()
    if opts.background == "image":
        fix = "Fix: choose a readable image file (JPEG, PNG, ...) as Background image."
        src = temps.add(_load_image(opts.image_file, "background image", fix))
        if src.get_base_type() != image.get_base_type():
            if image.get_base_type() == Gimp.ImageBaseType.GRAY:
                src.convert_grayscale()
            else:
                src.convert_rgb()
        if src.get_precision() != image.get_precision():
            src.convert_precision(image.get_precision())
        src_layer = src.merge_visible_layers(Gimp.MergeType.CLIP_TO_IMAGE)
        if src_layer is None:
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
    if opts.background == "blur":
        # A duplicate keeps the photo's colour profile, precision and type exactly; tattoos survive it.
        dup = temps.add(image.duplicate())
        copy = dup.get_layer_by_tattoo(layer.get_tattoo())
        if copy is None:
            raise core.PluginError("GIMP could not copy the layer for the blurred background. Fix: retry.")
        Gimp.Selection.none(dup)
        if copy.get_mask() is not None:
            copy.remove_mask(Gimp.MaskApplyMode.DISCARD)
        radius = opts.blur_radius or core.default_blur_radius(w, h)  # the server's default (the shared contract)
        _apply_gegl(copy, "gegl:gaussian-blur", std_dev_x=radius, std_dev_y=radius)
        return copy
    return None


# ---------------------------------------------------------------------------------------------
# The edit: one undo group, rolled back by hand if anything fails half-way
# ---------------------------------------------------------------------------------------------


class Edit:
    """Applies the prepared mask/background to the user's image and can undo its own steps.

    GIMP offers plug-ins no 'undo' call, so every change is recorded here and reverted in
    reverse order on failure: the image then looks and is structured exactly as before.
    """

    def __init__(self, image: Gimp.Image, layer: Gimp.Layer) -> None:
        self.image = image
        self.layer = layer
        self.parent = layer.get_parent()
        self.selected = list(image.get_selected_layers())
        self.created: list[Gimp.Layer] = []
        self.added_alpha = False
        self.added_mask = False
        self.old_mask: tuple[bytes, bool, bool, bool] | None = None
        self.hid_layer = False

    def position(self, item: Gimp.Item) -> int:
        return self.image.get_item_position(item)

    def insert(self, new: Gimp.Layer, position: int) -> Gimp.Layer:
        self.image.insert_layer(new, self.parent, position)
        self.created.append(new)
        return new

    def person_layer(self, colours: Gimp.Layer | None) -> Gimp.Layer:
        """A copy of the photo layer, directly above it, without its old mask; with ``colours`` (Edge=
        colours), the pixels where the matte is soft hold the person's own colours instead of the photo's."""
        copy = self.layer.copy()
        self.insert(copy, self.position(self.layer))
        copy.set_visible(True)
        if copy.get_mask() is not None:
            copy.remove_mask(Gimp.MaskApplyMode.DISCARD)
        if colours is None:
            return copy
        edge = Gimp.Layer.new_from_drawable(colours, self.image)
        self.insert(edge, self.position(copy))
        edge.set_offsets(*self.layer.get_offsets()[1:])
        edge.set_visible(True)
        edge.set_opacity(100.0)
        edge.set_mode(Gimp.LayerMode.NORMAL)
        merged = self.image.merge_down(edge, Gimp.MergeType.CLIP_TO_BOTTOM_LAYER)
        self.forget(copy, edge)
        self.created.append(merged)
        return merged

    def forget(self, *layers: Gimp.Layer) -> None:
        self.created = [c for c in self.created if all(c.get_id() != x.get_id() for x in layers)]

    def background_layer(self, opts: Options, prepared: Gimp.Layer | None, below: Gimp.Layer) -> Gimp.Layer | None:
        """Insert the background directly under ``below``, at the photo layer's offsets and size."""
        if opts.background == "transparent":
            return None
        w, h = self.layer.get_width(), self.layer.get_height()
        ox, oy = self.layer.get_offsets()[1:]
        if prepared is None:  # colour
            gray = self.image.get_base_type() == Gimp.ImageBaseType.GRAY
            kind = Gimp.ImageType.GRAY_IMAGE if gray else Gimp.ImageType.RGB_IMAGE
            bg = Gimp.Layer.new(self.image, BACKGROUND_LAYER_NAME, w, h, kind, 100.0, Gimp.LayerMode.NORMAL)
            self.insert(bg, self.position(below) + 1)
            Gimp.context_push()
            try:
                Gimp.context_set_background(opts.color)
                bg.fill(Gimp.FillType.BACKGROUND)
            finally:
                Gimp.context_pop()
        else:
            bg = Gimp.Layer.new_from_drawable(prepared, self.image)
            bg.set_name(BACKGROUND_LAYER_NAME)
            self.insert(bg, self.position(below) + 1)
        bg.set_offsets(ox, oy)
        bg.set_visible(True)
        return bg

    def set_mask(self, target: Gimp.Layer, mask: bytes, record: bool) -> None:
        """Give ``target`` a layer mask holding ``mask`` (replacing any mask it had)."""
        old = target.get_mask()
        if old is not None:
            if record:
                self.old_mask = (
                    _read_pixels(old, "Y float", 4, lambda _f: None),
                    target.get_apply_mask(),
                    target.get_show_mask(),
                    target.get_edit_mask(),
                )
            target.remove_mask(Gimp.MaskApplyMode.DISCARD)
        if not target.has_alpha():
            target.add_alpha()
            self.added_alpha = record
        new = target.create_mask(Gimp.AddMaskType.WHITE)
        target.add_mask(new)
        self.added_mask = record
        _write_pixels(new, "Y u8", mask)  # layer masks are linear: "Y u8" keeps soft edges exact

    def rollback(self) -> None:
        """Revert every recorded change, newest first; keep going if one step fails."""
        steps: list[tuple[str, Callable[[], object]]] = []
        image, lyr = self.image, self.layer
        for item in reversed(self.created):
            steps.append(("remove a created layer", lambda item=item: item.is_valid() and image.remove_layer(item)))
        if self.added_mask:
            discard = Gimp.MaskApplyMode.DISCARD
            steps.append(("remove the new mask", lambda: lyr.get_mask() and lyr.remove_mask(discard)))
        if self.added_alpha:
            steps.append(("remove the added alpha channel", lyr.flatten))
        if self.old_mask is not None:
            steps.append(("restore the old mask", self._restore_old_mask))
        if self.hid_layer:
            steps.append(("show the layer again", lambda: lyr.set_visible(True)))
        steps.append(("restore the layer selection", lambda: self.image.set_selected_layers(self.selected)))
        for what, step in steps:
            try:
                step()
            except Exception as exc:
                _log(f"rollback: could not {what}: {exc}")
        self.created.clear()

    def _restore_old_mask(self) -> None:
        data, apply_mask, show_mask, edit_mask = self.old_mask
        mask = self.layer.create_mask(Gimp.AddMaskType.WHITE)
        self.layer.add_mask(mask)
        _write_pixels(mask, "Y float", data)
        self.layer.set_apply_mask(apply_mask)
        self.layer.set_show_mask(show_mask)
        self.layer.set_edit_mask(edit_mask)


def _fault_point(name: str) -> None:
    if os.environ.get(_FAULT_ENV) == name:
        raise RuntimeError(f"fault injected at {name!r} ({_FAULT_ENV})")


def apply_edit(
    image: Gimp.Image, layer: Gimp.Layer, answer: Answer, prepared: Gimp.Layer | None, opts: Options,
    progress: Progress
) -> tuple[Gimp.Layer, Gimp.Layer | None]:
    """Change the user's image; returns (layer holding the person, background layer or None).

    With the person's edge colours and Output=mask, the mask goes on a copy that holds them and the
    photo layer is hidden, untouched, under it (as in other editors, where decontaminated colours
    always go to a new masked layer): changing the photo's own pixels would not be non-destructive.
    """
    edit = Edit(image, layer)
    mask = answer.mask
    progress.stage("building the layers", 0.7, 1.0)
    try:
        if opts.output == "mask" and answer.colours is None:
            background = edit.background_layer(opts, prepared, below=layer)
            progress(0.4)
            edit.set_mask(layer, mask, record=True)
            progress(0.9)
            _fault_point("edit")
            result = layer
        elif opts.output == "mask":
            result = edit.person_layer(answer.colours)
            progress(0.3)
            edit.set_mask(result, mask, record=False)
            background = edit.background_layer(opts, prepared, below=result)
            progress(0.9)
            _fault_point("edit")
            result.set_name(f"{layer.get_name()} (person)")
            layer.set_visible(False)
            edit.hid_layer = True
        else:
            copy = edit.person_layer(answer.colours)  # directly above the original
            edit.set_mask(copy, mask, record=False)
            progress(0.3)
            background = edit.background_layer(opts, prepared, below=copy)
            progress(0.5)
            if background is not None:
                merged = image.merge_down(copy, Gimp.MergeType.EXPAND_AS_NECESSARY)
                edit.forget(copy, background)
                edit.created.append(merged)
                result, background = merged, None
            else:
                copy.remove_mask(Gimp.MaskApplyMode.APPLY)
                result = copy
            progress(0.8)
            _fault_point("edit")
            if opts.output == "apply":
                name = layer.get_name()
                image.remove_layer(layer)  # the last real step: nothing after it may fail
                try:
                    result.set_name(name)  # only now is the name free (else GIMP makes it "name #1")
                except Exception as exc:
                    _log("could not rename the result layer:", exc)
            else:
                result.set_name(f"{layer.get_name()} (background replaced)")
                layer.set_visible(False)
                edit.hid_layer = True
        image.set_selected_layers([result])
        progress(1.0)
        return result, background
    except Exception:
        edit.rollback()
        raise


def replace_background(image: Gimp.Image, drawables: list[Gimp.Drawable], opts: Options) -> tuple:
    """The whole run: checks, network, preparation, then the single-undo-step edit."""
    if len(drawables) != 1 or not isinstance(drawables[0], Gimp.Layer) or isinstance(drawables[0], Gimp.LayerMask):
        raise core.PluginError(
            f"Replace Background works on exactly one layer, but {len(drawables)} item(s) are selected "
            "(or a mask/channel is). Fix: select the photo layer in the Layers dialog."
        )
    layer = drawables[0]
    if layer.is_group_layer():
        raise core.PluginError(
            f"{layer.get_name()!r} is a layer group. Fix: select a normal layer, or merge the group first "
            "(Layer > Merge Layer Group)."
        )
    if opts.output != "new-layer" and (layer.get_lock_content() or layer.get_lock_alpha()):
        raise core.PluginError(
            f"Layer {layer.get_name()!r} has locked pixels or alpha. Fix: unlock it in the Layers dialog, "
            "or choose Output 'New layer with the composite'."
        )
    temps = TempImages()
    Gimp.progress_init("Replace Background")
    progress = Progress()
    try:
        answer = fetch_mask(layer, opts, progress, temps)  # all network work happens here
        prepared = prepare_background(image, layer, opts, temps)
        Gimp.context_push()
        image.undo_group_start()
        try:
            result = apply_edit(image, layer, answer, prepared, opts, progress)
        finally:
            image.undo_group_end()
            Gimp.context_pop()
        Gimp.displays_flush()
        return result
    finally:
        temps.close()
        Gimp.progress_end()


# ---------------------------------------------------------------------------------------------
# Dialog and plug-in registration
# ---------------------------------------------------------------------------------------------


def show_dialog(procedure: Gimp.Procedure, config: Gimp.ProcedureConfig) -> bool:
    """The ProcedureDialog, grouped in three frames; GIMP remembers the values between runs."""
    GimpUi.init(PROC_NAME)
    dialog = GimpUi.ProcedureDialog.new(procedure, config, "Replace Background")
    groups = (
        ("server", "Server", ["server-url", "model-name", "inference-key", "key-file", "timeout"]),
        ("background", "Background", ["background", "background-color", "background-image", "blur-radius"]),
        ("output", "Result", ["mirror-pass", "edge", "output", "grow", "feather"]),
    )
    for key, title, props in groups:
        dialog.get_label(f"{key}-title", title, False, False)
        dialog.fill_box(f"{key}-box", props)
        dialog.fill_frame(f"{key}-frame", f"{key}-title", False, f"{key}-box")
    for prop, value in (("background-color", "color"), ("background-image", "image"), ("blur-radius", "blur")):
        try:  # grey out options that the chosen background does not use
            values = Gimp.ValueArray.new(1)
            values.append(GObject.Value(GObject.TYPE_STRING, value))
            dialog.set_sensitive_if_in(prop, None, "background", values, True)
        except Exception as exc:  # cosmetic only: never block the dialog
            _log("set_sensitive_if_in failed:", exc)
    dialog.fill(["server-frame", "background-frame", "output-frame"])
    ok = dialog.run()
    dialog.destroy()
    return bool(ok)


def _choice(items: tuple[tuple[str, str], ...]) -> Gimp.Choice:
    choice = Gimp.Choice.new()
    for i, (nick, label) in enumerate(items):
        choice.add(nick, i, label, "")
    return choice


class ReplaceBackground(Gimp.PlugIn):
    """The plug-in object GIMP queries and runs; one image procedure."""

    def do_query_procedures(self) -> list[str]:
        return [PROC_NAME]

    def do_set_i18n(self, name: str) -> bool:
        return False

    def do_create_procedure(self, name: str) -> Gimp.Procedure:
        Gegl.init(None)
        rw = GObject.ParamFlags.READWRITE
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_menu_label("Replace Background\u2026")
        procedure.add_menu_path(MENU_PATH)
        procedure.set_documentation(
            "Replace the background behind people using the local replace-background server",
            "Sends the selected layer to the replace-background TorchServe (docs/API.md: mode=cutout with "
            "the edge stage, or mode=mask) and adds the person's soft matte as a layer mask (on a copy holding "
            "the person's own edge colours, the photo kept hidden under it, or on the photo itself), with a "
            "colour, image or blurred background layer under it; or creates a new composite layer; or "
            "applies it. Everything stays on the "
            "server you name (default: this computer). One undo step; on any failure the image is left "
            "unchanged and the error says what to do.",
            name,
        )
        procedure.set_attribution("replace-background contributors", "MIT licence", "2025")

        white = Gegl.Color.new(DEFAULT_COLOR)
        procedure.add_string_argument("server-url", "Ser_ver URL", "TorchServe inference address", core.DEFAULT_URL, rw)
        procedure.add_string_argument("model-name", "_Model name", "Served model name", core.DEFAULT_MODEL, rw)
        procedure.add_string_argument(
            "inference-key", "Inference _key",
            "TorchServe inference key; not renewed when it expires (empty: Key file, or this project's key)", "", rw,
        )
        procedure.add_file_argument(
            "key-file", "Key _file",
            "TorchServe key_file.json of another server (empty: this project's serve/key_file.json); "
            "expired keys are renewed from it",
            Gimp.FileChooserAction.OPEN, True, None, rw,
        )
        procedure.add_int_argument("timeout", "_Timeout (s)", "Seconds to wait for the server", 1, 3600, 120, rw)
        procedure.add_choice_argument(
            "background", "_Background", "What goes behind the person", _choice(BACKGROUNDS), "color", rw
        )
        procedure.add_color_argument("background-color", "Background colo_ur", "Colour of the new background",
                                     False, white, rw)
        procedure.add_file_argument(
            "background-image", "Background _image", "Image scaled to cover the layer and centred",
            Gimp.FileChooserAction.OPEN, True, None, rw,
        )
        procedure.add_double_argument(
            "blur-radius", "Blur ra_dius (px)", "Blur of the photo for Background=blur; 0 = 2% of the layer diagonal",
            0.0, 500.0, 0.0, rw,
        )
        procedure.add_boolean_argument(
            "mirror-pass", "Mirror pass (more _accurate, slower)",
            "Also segment the mirrored layer and average the two masks: a better mask, a little slower",
            True, rw,
        )
        procedure.add_choice_argument(
            "edge", "Edge refi_nement",
            "colours: the server's soft matte becomes the layer mask and the person's own colours replace the "
            "mixed ones at the outline, on a masked copy of the photo (no fringe of the old background); "
            "matte: the soft matte only, on the photo; off: the model's mask as it is",
            _choice(EDGES), "colours", rw,
        )
        procedure.add_choice_argument("output", "Out_put", "How the result is added", _choice(OUTPUTS), "mask", rw)
        procedure.add_int_argument(
            "grow", "_Grow mask (px)", "Grow the person mask by this many pixels; negative values shrink it",
            -100, 100, 0, rw,
        )
        procedure.add_double_argument(
            "feather", "F_eather edges (px)", "Soften the mask edge over about this many pixels", 0.0, 100.0, 0.0, rw
        )
        procedure.add_layer_return_value(
            "result-layer", "Result layer",
            "The layer holding the person (for Output=mask the original layer, or its masked copy with Edge=colours)",
            False, rw,
        )
        procedure.add_layer_return_value(
            "background-layer", "Background layer", "The new background layer (Output=mask), else none", True, rw
        )
        return procedure

    def run(
        self,
        procedure: Gimp.Procedure,
        run_mode: Gimp.RunMode,
        image: Gimp.Image,
        drawables: list[Gimp.Drawable],
        config: Gimp.ProcedureConfig,
        run_data: object,
    ) -> Gimp.ValueArray:
        if run_mode == Gimp.RunMode.INTERACTIVE:
            # show white, not the transparent black GIMP 3.0 hands over for an unset colour
            config.set_property("background-color", _color_or_default(config.get_property("background-color")))
            if not show_dialog(procedure, config):
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
        try:
            opts = Options.from_config(config)
            result, background = replace_background(image, list(drawables), opts)
        except core.PluginError as exc:
            _log("failed:", exc)
            return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(str(exc)))
        except Exception as exc:
            traceback.print_exc()
            message = (
                f"Replace Background failed unexpectedly ({type(exc).__name__}: {exc}). The image was left as it "
                "was. Fix: retry; if it persists, report it with the messages GIMP printed to its error console."
            )
            return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(message))
        retval = procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)
        retval.remove(1)
        retval.insert(1, GObject.Value(Gimp.Layer, result))
        retval.remove(2)
        retval.insert(2, GObject.Value(Gimp.Layer, background))
        return retval


if __name__ == "__main__":
    Gimp.main(ReplaceBackground.__gtype__, sys.argv)
