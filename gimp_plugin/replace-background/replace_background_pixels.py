"""GIMP's side of the plug-in's plumbing: pixels in and out of drawables, PDB procedures, temporary images.

Everything here talks to GIMP through ``gi`` and nothing here knows about the server: the modules that
prepare the answer (``replace_background_prepare``) and make the edit (``replace_background_edit``)
build on it. Failures a user can act on are raised as the core's ``PluginError`` with cause and fix.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio, GLib  # noqa: E402
from replace_background_core import PluginError  # noqa: E402


def log(*parts: object) -> None:
    """Diagnostics go to stderr, which GIMP shows in a terminal or its error console."""
    print("[replace-background]", *parts, file=sys.stderr, flush=True)


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
        if value - self.last >= 0.005 or fraction >= 1.0:  # GIMP redraws the bar on every update
            Gimp.progress_update(value)
            self.last = value


def read_pixels(drawable: Gimp.Drawable, fmt: str, bpp: int, progress: Callable[[float], None]) -> bytes:
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


def write_pixels(drawable: Gimp.Drawable, fmt: str, data: bytes) -> None:
    """Write a whole drawable in one go and tell GIMP to redraw it."""
    w, h = drawable.get_width(), drawable.get_height()
    buf = drawable.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, w, h), fmt, data)
    buf.flush()
    drawable.update(0, 0, w, h)


def apply_gegl(drawable: Gimp.Drawable, operation: str, **props: object) -> None:
    """Run one GEGL operation on a drawable and merge it (used only on our own temporary images)."""
    flt = Gimp.DrawableFilter.new(drawable, operation, "")
    cfg = flt.get_config()
    for name, value in props.items():
        cfg.set_property(name.replace("_", "-"), value)
    drawable.merge_filter(flt)


def load_image(gfile: Gio.File, what: str, fix: str) -> Gimp.Image:
    """``Gimp.file_load`` with a message that says which file and what to do, instead of a bare None."""
    try:
        img = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, gfile)
    except GLib.Error as exc:
        name = gfile.get_parse_name()
        raise PluginError(f"GIMP could not open the {what} {name} ({exc.message}). {fix}") from None
    if img is None:
        raise PluginError(f"GIMP could not open the {what} {gfile.get_parse_name()}. {fix}")
    return img


def run_procedure(name: str, **args: object) -> None:
    """Run a PDB procedure non-interactively with ``args`` (underscores for dashes); raise on failure."""
    procedure = Gimp.get_pdb().lookup_procedure(name)
    if procedure is None:
        raise PluginError(f"GIMP has no procedure {name!r}. Fix: reinstall GIMP with its file plug-ins.")
    config = procedure.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    for key, value in args.items():
        config.set_property(key.replace("_", "-"), value)
    result = procedure.run(config)
    if result.index(0) != Gimp.PDBStatusType.SUCCESS:
        said = result.index(1) if result.length() > 1 else ""
        raise PluginError(f"GIMP's {name} failed ({said or result.index(0).value_nick}). Fix: retry; "
                          "check that the temporary folder has free space.")


def unlink_quietly(path: str) -> None:
    """Remove a temporary file; one that is already gone is no failure of the run."""
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
                log("could not delete a temporary image:", exc)
        self.images.clear()
