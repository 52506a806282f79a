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
# This entry file holds the options, the dialog, the registration and the run. Its modules, next
# to it (the installer, gimp_plugin/install.py, copies them all; docs/GIMP.md describes each):
#   replace_background_core      asking the server and checking its answer (standard library only,
#                                with _settings and _messages; tested outside GIMP)
#   replace_background_pixels    GIMP pixel I/O, PDB procedures, temporary images, progress
#   replace_background_prepare   export the layer, ask, decode, soften, build the background
#   replace_background_edit      the edit, one function per Output, and its rollback
#   replace_background_dialog    the dialog: the photographer's choices first, the connection folded away
#   replace_background_keep      who stays: one point per part of the selection (standard library only)
#   replace_background_selection the selection sampled over the layer, for those points
"""GIMP 3 plug-in "Replace Background...": procedure ``python-fu-replace-background``."""

from __future__ import annotations

import dataclasses
import os
import sys
import traceback
from dataclasses import dataclass

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
from gi.repository import Gegl, Gimp, Gio, GLib, GObject  # noqa: E402
from replace_background_dialog import show_dialog  # noqa: E402
from replace_background_edit import apply_edit  # noqa: E402
from replace_background_keep import keep_value  # noqa: E402
from replace_background_pixels import Progress, TempImages, log  # noqa: E402
from replace_background_prepare import export_png, fetch_mask, prepare_background  # noqa: E402
from replace_background_selection import has_selection, keep_points  # noqa: E402

PROC_NAME = "python-fu-replace-background"
MENU_PATH = "<Image>/Filters/Enhance"
DEFAULT_COLOR = "white"  # like the server's composite default (#FFFFFF)

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
ZOOMS = (
    ("off", "Off (fastest)"),
    ("auto", "Automatic (a closer look when the people are small)"),
    ("on", "Always (slower)"),
)
CROWDS = (
    ("auto", "Automatic (a second look when the photo looks like a group)"),
    ("on", "Always (also finds people behind the main person; slower)"),
    ("off", "Off (the main person's network only)"),
)
LIGHT_BACKGROUNDS = ("image", "blur")  # the backgrounds that have a light to match
OUTPUTS = (
    ("mask", "Layer mask on the photo + background layer (non-destructive)"),
    ("new-layer", "New layer with the composite"),
    ("apply", "Apply to the layer (destructive)"),
)


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
    keep_selection: bool = True
    match_light: float = 0.0

    @property
    def light(self) -> bool:
        """Match light is on and the background has a light to match (a colour or nothing has none)."""
        return self.match_light > 0 and self.background in LIGHT_BACKGROUNDS

    @property
    def plan(self) -> core.RequestPlan:
        return core.plan_request(self.edge, self.light)

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
        # Options left at their defaults mean this project's own server, found through install.py's record.
        server = core.resolve_server(
            config.get_property("server-url"),
            config.get_property("model-name"),
            config.get_property("inference-key"),
            key_path,
            project=core.project_folder(_HERE),
            timeout=float(config.get_property("timeout")),
            tta="flip" if config.get_property("mirror-pass") else "none",
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
            keep_selection=bool(config.get_property("keep-selected-people")),
            match_light=float(config.get_property("match-light")),
        )
        plan = opts.plan  # what Edge and Match light ask of the server
        opts.server = dataclasses.replace(server, mode=plan.mode, matting=plan.matting,
                                          zoom=config.get_property("zoom"), crowd=config.get_property("crowd"),
                                          harmonize=opts.match_light if opts.light else 0.0)
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


def target_layer(drawables: list[Gimp.Drawable], output: str) -> Gimp.Layer:
    """The one layer the run works on, or a ``PluginError`` saying what to select instead."""
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
    if output != "new-layer" and (layer.get_lock_content() or layer.get_lock_alpha()):
        raise core.PluginError(
            f"Layer {layer.get_name()!r} has locked pixels or alpha. Fix: unlock it in the Layers dialog, "
            "or choose Output 'New layer with the composite'."
        )
    return layer


def replace_background(image: Gimp.Image, drawables: list[Gimp.Drawable],
                       opts: Options) -> tuple[Gimp.Layer, Gimp.Layer | None]:
    """The whole run: checks, network and preparation, then the edit as one undo step."""
    layer = target_layer(drawables, opts.output)
    temps = TempImages()
    Gimp.progress_init("Replace Background")
    progress = Progress()
    try:
        # all network work and everything else that can fail happens before the image is touched
        server = opts.server
        if opts.keep_selection:
            server = dataclasses.replace(server, keep=keep_value(keep_points(image, layer)))
        background = prepare_background(image, layer, opts.background, opts.color, opts.image_file,
                                        opts.blur_radius, temps)
        light = export_png(background.layer) if opts.light and background and background.layer else None
        answer = fetch_mask(layer, server, opts.plan.colours, opts.grow, opts.feather, progress, temps, light)
        Gimp.context_push()
        image.undo_group_start()
        try:
            result = apply_edit(image, layer, answer, background, opts.output, progress)
        finally:
            image.undo_group_end()
            Gimp.context_pop()
        Gimp.displays_flush()
        return result
    finally:
        temps.close()
        Gimp.progress_end()


def _choice(items: tuple[tuple[str, str], ...]) -> Gimp.Choice:
    choice = Gimp.Choice.new()
    for i, (nick, label) in enumerate(items):
        choice.add(nick, i, label, "")
    return choice


RW = GObject.ParamFlags.READWRITE


def add_arguments(procedure: Gimp.ImageProcedure) -> None:
    """The procedure's arguments in the dialog's three groups, then its return values."""
    add_server_arguments(procedure)
    add_background_arguments(procedure)
    add_people_arguments(procedure)
    add_result_arguments(procedure)
    add_return_values(procedure)


def add_server_arguments(procedure: Gimp.ImageProcedure) -> None:
    """Where to ask and with which key; empty values mean this project's own server (install.py's record)."""
    procedure.add_string_argument("server-url", "Ser_ver URL", "TorchServe inference address", core.DEFAULT_URL, RW)
    procedure.add_string_argument("model-name", "_Model name", "Served model name", core.DEFAULT_MODEL, RW)
    procedure.add_string_argument(
        "inference-key", "Inference _key",
        "TorchServe inference key; not renewed when it expires (empty: Key file, or this project's key)", "", RW,
    )
    procedure.add_file_argument(
        "key-file", "Key _file",
        "TorchServe key_file.json of another server (empty: this project's serve/key_file.json); "
        "expired keys are renewed from it",
        Gimp.FileChooserAction.OPEN, True, None, RW,
    )
    procedure.add_int_argument("timeout", "_Timeout (s)", "Seconds to wait for the server", 1, 3600, 120, RW)


def add_background_arguments(procedure: Gimp.ImageProcedure) -> None:
    """What goes behind the person."""
    white = Gegl.Color.new(DEFAULT_COLOR)
    procedure.add_choice_argument(
        "background", "_Background", "What goes behind the person", _choice(BACKGROUNDS), "color", RW
    )
    procedure.add_color_argument("background-color", "Background colo_ur", "Colour of the new background",
                                 False, white, RW)
    procedure.add_file_argument(
        "background-image", "Background _image", "Image scaled to cover the layer and centred",
        Gimp.FileChooserAction.OPEN, True, None, RW,
    )
    procedure.add_double_argument(
        "blur-radius", "Blur ra_dius (px)", "Blur of the photo for Background=blur; 0 = 2% of the layer diagonal",
        0.0, 500.0, 0.0, RW,
    )


def add_people_arguments(procedure: Gimp.ImageProcedure) -> None:
    """Who stays and how the person's light is matched."""
    procedure.add_boolean_argument(
        "keep-selected-people", "Keep onl_y the people in the selection",
        "When the image has a selection, only the people in it stay (one point per part of the selection goes "
        "to the server); without a selection everyone stays",
        True, RW,
    )
    procedure.add_choice_argument(
        "zoom", "Find small people (_zoom)",
        "A closer look for people who are small in the photo: off (fastest), automatic (only when the first "
        "look finds no tall person), or always",
        _choice(ZOOMS), core.contract.DEFAULT_ZOOM, RW,
    )
    procedure.add_choice_argument(
        "crowd", "Find _all people",
        "A second network, trained on groups, looks again: automatically when the first look shows a group, "
        "always (it also finds the people behind the main person, and cuts a lone person a little less "
        "exactly), or never",
        _choice(CROWDS), core.contract.DEFAULT_CROWD, RW,
    )
    procedure.add_double_argument(
        "match-light", "Match li_ght",
        "Move the person's colour and brightness toward the new background's (Background = image or blurred "
        "copy): 0 off, 1 fully. The person's matched colours go on a copy of the photo; the photo stays as it is",
        0.0, 1.0, 0.0, RW,
    )


def add_result_arguments(procedure: Gimp.ImageProcedure) -> None:
    """How good the mask is asked to be and how the result is added to the image."""
    procedure.add_boolean_argument(
        "mirror-pass", "Mirror pass (more accurate, slo_wer)",
        "Also segment the mirrored layer and average the two masks: a better mask, a little slower",
        True, RW,
    )
    procedure.add_choice_argument(
        "edge", "Edge refi_nement",
        "colours: the server's soft matte becomes the layer mask and the person's own colours replace the "
        "mixed ones at the outline, on a masked copy of the photo (no fringe of the old background); "
        "matte: the soft matte only, on the photo; off: the model's mask as it is",
        _choice(EDGES), "colours", RW,
    )
    procedure.add_choice_argument("output", "Out_put", "How the result is added", _choice(OUTPUTS), "mask", RW)
    procedure.add_int_argument(
        "grow", "Grow mask (p_x)", "Grow the person mask by this many pixels; negative values shrink it",
        -100, 100, 0, RW,
    )
    procedure.add_double_argument(
        "feather", "F_eather edges (px)", "Soften the mask edge over about this many pixels", 0.0, 100.0, 0.0, RW
    )


def add_return_values(procedure: Gimp.ImageProcedure) -> None:
    """The layers a script gets back, so it can go on working with them."""
    procedure.add_layer_return_value(
        "result-layer", "Result layer",
        "The layer holding the person (for Output=mask the original layer, or its masked copy with Edge=colours)",
        False, RW,
    )
    procedure.add_layer_return_value(
        "background-layer", "Background layer", "The new background layer (Output=mask), else none", True, RW
    )


class ReplaceBackground(Gimp.PlugIn):
    """The plug-in object GIMP queries and runs; one image procedure."""

    def do_query_procedures(self) -> list[str]:
        return [PROC_NAME]

    def do_set_i18n(self, name: str) -> bool:
        return False

    def do_create_procedure(self, name: str) -> Gimp.Procedure:
        Gegl.init(None)
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

        add_arguments(procedure)
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
            if not show_dialog(procedure, config, has_selection(image), PROC_NAME):
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
        try:
            opts = Options.from_config(config)
            result, background = replace_background(image, list(drawables), opts)
        except core.PluginError as exc:
            log("failed:", exc)
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
