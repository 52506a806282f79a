"""Who stays: the points that "Keep only the people in the selection" sends (standard library only).

The server keeps the people (connected regions of its mask) that contain a point of ``keep``, or lie
nearest to one (docs/API.md). A point on the background between two people would keep the nearer of
them, whichever the user meant, so the plug-in sends one point per separate part of the selection, at
that part's middle: a rectangle or lasso around one person puts its point on that person, and two
separate selections around two of three people keep those two. No ``gi`` import: tested outside GIMP
(``tests/gimp/test_gimp_plugin_core.py``); the GIMP side samples the selection
(``replace_background_selection``).
"""

from __future__ import annotations

from collections.abc import Sequence

from replace_background_settings import contract

MAX_POINTS = contract.MAX_KEEP_POINTS
SAMPLES = 200  # the selection is looked at on a grid of at most SAMPLES x SAMPLES points
SELECTED = 128  # a selection value (0..255) from which a pixel counts as selected, as GIMP's "Selection to Path"


def sample_positions(start: int, length: int, count: int = SAMPLES) -> list[int]:
    """At most ``count`` pixel positions spread evenly over ``start .. start + length - 1``, cell middles."""
    count = max(1, min(count, length))
    return [start + (2 * i + 1) * length // (2 * count) for i in range(count)]


def _parts(grid: bytes, cols: int, rows: int) -> list[list[int]]:
    """The 4-connected parts of the selected cells of a row-major grid, largest first."""
    seen = bytearray(len(grid))
    parts: list[list[int]] = []
    for start in range(len(grid)):
        if seen[start] or grid[start] < SELECTED:
            continue
        seen[start] = 1
        part, todo = [], [start]
        while todo:
            cell = todo.pop()
            part.append(cell)
            y, x = divmod(cell, cols)
            for nx, ny in ((x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1)):
                if 0 <= nx < cols and 0 <= ny < rows:
                    n = ny * cols + nx
                    if not seen[n] and grid[n] >= SELECTED:
                        seen[n] = 1
                        todo.append(n)
        parts.append(part)
    parts.sort(key=len, reverse=True)
    return parts


def _middle(part: list[int], cols: int) -> int:
    """The cell of ``part`` at its centroid, or the part's cell nearest to it when the centroid lies
    outside the part (a ring or a crescent): the point must be inside what the user selected."""
    cy = sum(c // cols for c in part) / len(part)
    cx = sum(c % cols for c in part) / len(part)
    return min(part, key=lambda c: (c % cols - cx) ** 2 + (c // cols - cy) ** 2)


def selection_points(grid: bytes, xs: Sequence[int], ys: Sequence[int],
                     limit: int = MAX_POINTS) -> list[tuple[int, int]]:
    """One point per separate part of a sampled selection, largest parts first, at most ``limit``.

    ``grid`` holds the selection's values (0..255) at the pixels ``xs`` x ``ys`` (row-major), already
    in the layer's coordinates. Parts of a single sample are dropped when a larger part exists: they
    are specks of a feathered or hand-drawn selection, not a person the user chose.
    """
    cols, rows = len(xs), len(ys)
    if len(grid) != cols * rows:
        raise ValueError(f"grid of {len(grid)} values for {cols}x{rows} positions")
    parts = _parts(grid, cols, rows)
    if parts and len(parts[0]) > 1:
        parts = [p for p in parts if len(p) > 1]
    points = []
    for part in parts[:limit]:
        y, x = divmod(_middle(part, cols), cols)
        points.append((xs[x], ys[y]))
    return points


def keep_value(points: Sequence[tuple[int, int]]) -> str:
    """The ``keep`` option's value for ``points``: ``x,y;x,y`` in the layer's pixels."""
    sep, coord = contract.KEEP_POINT_SEPARATOR, contract.KEEP_COORD_SEPARATOR
    return sep.join(f"{int(x)}{coord}{int(y)}" for x, y in points)
