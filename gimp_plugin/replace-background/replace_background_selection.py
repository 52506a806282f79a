"""GIMP's side of "Keep only the people in the selection": sample the selection over the layer.

The selection lives in the image's coordinates and the server's points in the layer's pixels, so the
selection is read only where it overlaps the layer, at the layer's offsets; the points themselves
are chosen by the standard-library ``replace_background_keep``. The selection is read on a grid of
at most 200 x 200 pixels, a row at a time, so a 24-megapixel photo costs a few milliseconds.
"""

from __future__ import annotations

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
import replace_background_core as core  # noqa: E402
import replace_background_keep as keep  # noqa: E402
from gi.repository import Gegl, Gimp  # noqa: E402


def has_selection(image: Gimp.Image) -> bool:
    """True when the image has a selection (Select > None clears it)."""
    return bool(Gimp.Selection.bounds(image)[1])


def keep_points(image: Gimp.Image, layer: Gimp.Layer) -> list[tuple[int, int]]:
    """The points that keep the people in the selection, in ``layer``'s pixels; [] without a selection.

    A selection that misses the layer cannot choose anyone on it: that is refused with a message,
    rather than sending nothing (everyone stays) or a point off the photo (the server refuses it).
    """
    found, non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(image)
    if not non_empty:
        return []
    ox, oy = layer.get_offsets()[1:]
    left, top = max(x1, ox), max(y1, oy)
    right, bottom = min(x2, ox + layer.get_width()), min(y2, oy + layer.get_height())
    if right <= left or bottom <= top:
        raise core.PluginError(
            f"The selection does not touch the layer {layer.get_name()!r}, so it cannot choose who stays. "
            "Fix: select around the people to keep on this layer, clear the selection (Select > None), or "
            "untick 'Keep only the people in the selection'."
        )
    xs = keep.sample_positions(left, right - left)
    ys = keep.sample_positions(top, bottom - top)
    buffer = image.get_selection().get_buffer()
    rows = []
    for y in ys:
        line = bytes(buffer.get(Gegl.Rectangle.new(left, y, right - left, 1), 1.0, "Y u8", Gegl.AbyssPolicy.NONE))
        rows.append(bytes(line[x - left] for x in xs))
    points = keep.selection_points(b"".join(rows), [x - ox for x in xs], [y - oy for y in ys])
    if not points:  # a selection thinner than the grid: its box's middle
        points = [((left + right) // 2 - ox, (top + bottom) // 2 - oy)]
    return points
