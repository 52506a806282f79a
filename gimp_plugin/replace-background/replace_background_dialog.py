"""The dialog: the photographer's choices first, the connection settings last and folded away.

It opens on what changes the picture, in the order one decides it: the background, who stays, the
light, the edge, the output. Where the plug-in finds its server (URL, model, key, key file, timeout)
is almost never touched, since the defaults reach this project's own server, so it sits in a closed
expander at the bottom that says so. GIMP builds every widget from the procedure's arguments
(``GimpUi.ProcedureDialog``) and remembers the values between runs.
"""

from __future__ import annotations

import json
import os

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gtk", "3.0")
from gi.repository import Gimp, GimpUi, GLib, GObject, Gtk  # noqa: E402
from replace_background_pixels import log  # noqa: E402

# (id, title, arguments), top to bottom
GROUPS = (
    ("background", "Background", ["background", "background-color", "background-image", "blur-radius"]),
    ("people", "Who stays", ["keep-selected-people", "zoom", "crowd"]),
    ("light", "Light", ["match-light"]),
    ("edge", "Edge", ["edge", "grow", "feather", "mirror-pass"]),
    ("output", "Output", ["output"]),
)
CONNECTION = ["server-url", "model-name", "inference-key", "key-file", "timeout"]
CONNECTION_TITLE = "Connection settings"
CONNECTION_NOTE = ("Usually left as they are: with these defaults the plug-in finds this project's own server "
                   "and its key by itself.")
# arguments greyed out unless Background is one of these values
NEEDS_BACKGROUND = {
    "background-color": ("color",),
    "background-image": ("image",),
    "blur-radius": ("blur",),
    "match-light": ("image", "blur"),
}
# Test hook: the dialog's widgets (labels, order, whether shown) are written to this JSON file once it
# is on screen, so a test of the real GIMP can check the layout. Never set by users.
DUMP_ENV = "REPLACE_BACKGROUND_DIALOG_DUMP"


def show_dialog(procedure: Gimp.Procedure, config: Gimp.ProcedureConfig, selection: bool, name: str) -> bool:
    """Run the dialog; True for OK. ``selection``: the image has one (else 'Keep only...' is greyed out)."""
    GimpUi.init(name)
    dialog = GimpUi.ProcedureDialog.new(procedure, config, "Replace Background")
    dialog.get_spin_scale("match-light", 100.0)  # a slider, 0 to 100 %
    for key, title, props in GROUPS:
        dialog.get_label(f"{key}-title", title, False, False)
        dialog.fill_box(f"{key}-box", props)
        dialog.fill_frame(f"{key}-frame", f"{key}-title", False, f"{key}-box")
    _fill_connection(dialog)
    _grey_out(dialog, selection)
    dialog.fill([f"{key}-frame" for key, _, _ in GROUPS] + ["connection-expander"])
    dump = os.environ.get(DUMP_ENV)
    if dump:
        dialog.connect("map", lambda widget: GLib.timeout_add(500, _dump, widget, dump))
    ok = dialog.run()
    dialog.destroy()
    return bool(ok)


def _fill_connection(dialog: GimpUi.ProcedureDialog) -> None:
    """The connection settings in a closed expander, under a line that says they are rarely changed."""
    note = dialog.get_label("connection-note", CONNECTION_NOTE, False, False)
    try:
        note.set_line_wrap(True)
        note.set_max_width_chars(48)
        note.set_xalign(0.0)
    except Exception as exc:  # cosmetic only
        log("could not wrap the connection note:", exc)
    dialog.get_label("connection-title", CONNECTION_TITLE, False, False)
    dialog.fill_box("connection-box", ["connection-note", *CONNECTION])
    expander = dialog.fill_expander("connection-expander", "connection-title", False, "connection-box")
    expander.set_expanded(False)


def _grey_out(dialog: GimpUi.ProcedureDialog, selection: bool) -> None:
    """Grey out what the current choices do not use; cosmetic, so a failure never blocks the dialog."""
    try:
        for prop, backgrounds in NEEDS_BACKGROUND.items():
            values = Gimp.ValueArray.new(len(backgrounds))
            for value in backgrounds:
                values.append(GObject.Value(GObject.TYPE_STRING, value))
            dialog.set_sensitive_if_in(prop, None, "background", values, True)
        if not selection:
            dialog.set_sensitive("keep-selected-people", False, None, None, False)
    except Exception as exc:
        log("could not grey out unused options:", exc)


def _widget_text(widget: Gtk.Widget) -> str:
    if isinstance(widget, Gtk.Label):
        return widget.get_text()
    if isinstance(widget, GimpUi.SpinScale):
        return (widget.get_label() or "").replace("_", "")  # without its mnemonic mark
    return ""


def _shown(widget: Gtk.Widget) -> bool:
    """On screen: mapped, with neither it nor a parent hidden, and given room (a closed expander's
    contents keep their default 1x1 allocation at -1, -1)."""
    item = widget
    while item is not None:
        if not item.get_visible() or not item.get_child_visible():
            return False
        item = item.get_parent()
    room = widget.get_allocation()
    return widget.get_mapped() and room.width > 1 and room.height > 1 and room.x >= 0 and room.y >= 0


def _walk(widget: Gtk.Widget, top: Gtk.Widget, out: list[dict]) -> None:
    """Every widget under ``widget`` that shows text, in tree order, with where it is on screen."""
    text = _widget_text(widget)
    pos = widget.translate_coordinates(top, 0, 0)
    entry = {"type": type(widget).__name__, "text": text, "shown": _shown(widget),
             "sensitive": widget.is_sensitive(), "y": pos[1] if pos else None}
    if text:
        out.append(entry)
    if isinstance(widget, Gtk.Expander):
        out.append({**entry, "type": "GtkExpander", "expanded": widget.get_expanded()})
    if isinstance(widget, Gtk.Container):
        widget.forall(lambda child: _walk(child, top, out))


def _dump(dialog: Gtk.Widget, path: str) -> bool:
    """Write the dialog's text widgets and its size to ``path`` (the test hook ``DUMP_ENV``)."""
    widgets: list[dict] = []
    try:
        _walk(dialog, dialog, widgets)
        doc = {"width": dialog.get_allocated_width(), "height": dialog.get_allocated_height(), "widgets": widgets}
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
    except Exception as exc:
        log("could not dump the dialog:", exc)
    return False
