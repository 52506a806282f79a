"""Parse one TorchServe request row into image bytes and validated options (docs/API.md).

TorchServe hands the handler each request as a dict: a raw body arrives as ``{"body": bytearray}``,
a multipart form as one key per field (files and text fields alike, all ``bytearray``), a JSON
body as a dict and a ``text/*`` body as ``str``. Query parameters never reach the handler on
``/predictions``, so options come from multipart fields or ``X-`` headers. Everything here is
pure Python with no TorchServe import, so it is tested directly and every mistake a client can
make becomes a ``RequestError`` with a message that says what to send instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from handler.contract import (
    BACKGROUND_KEYWORDS,
    BLUR_RADIUS_RANGE,
    CROWD_MODES,
    DEFAULT_BACKGROUND,
    DEFAULT_CROWD,
    DEFAULT_HARMONIZE,
    DEFAULT_QUALITY,
    DEFAULT_ZOOM,
    FORMATS,
    HARMONIZE_RANGE,
    IMAGE_FIELD,
    KEEP_COORD_SEPARATOR,
    KEEP_POINT_SEPARATOR,
    MATTING_MODES,
    MAX_KEEP_LENGTH,
    MAX_KEEP_POINTS,
    MAX_OPTION_LENGTH,
    MODES,
    OPTION_HEADERS,
    QUALITY_RANGE,
    REFINE_METHODS,
    TTA_MODES,
    ZOOM_MODES,
)
from segmenter.imaging import parse_color

if TYPE_CHECKING:  # the annotation only: parsing a request needs no torch
    import torch

# The option names, values and limits are the HTTP contract (handler/contract.py, shared with the
# client and the GIMP plug-in); this module only parses a request against it.
DEFAULT_COLOR = parse_color(DEFAULT_BACKGROUND)
IMAGE_FIELDS = (IMAGE_FIELD,)
RAW_BODY_KEYS = ("body", "data")
KNOWN_FIELDS = frozenset(IMAGE_FIELDS) | frozenset(OPTION_HEADERS)
# Option values are short words, colours or numbers, so a longer value is refused before it is
# parsed or echoed. TorchServe sends an error message as the HTTP reason phrase too: echoed whole,
# a 1 MB ``mode`` field became a 1 MB status line that clients could not read (connection aborted
# instead of a 400). For the same reason, errors quote at most ``_QUOTE_CHARS`` of any value.
_QUOTE_CHARS = 40
_MAX_NAMES_LISTED = 5
_PRINTABLE = re.compile(rb"^[\x20-\x7e\t\r\n]*$")


class RequestError(ValueError):
    """A request the handler cannot serve; ``status`` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Options:
    """Validated options. ``background`` is an RGB tuple, ``"blur"``, ``"transparent"`` or ``"image"``."""

    mode: str = "mask"
    background: tuple[int, int, int] | str = DEFAULT_COLOR
    format: str = "png"
    blur_radius: float | None = None
    refine: str = "guided"
    quality: int = DEFAULT_QUALITY
    tta: str = "none"
    zoom: str = DEFAULT_ZOOM
    crowd: str = DEFAULT_CROWD
    matting: bool = True  # the edge stage for cutout and composite (segmenter/matting.py)
    keep: tuple[tuple[float, float], ...] = ()  # points that choose who stays; () keeps everyone
    harmonize: float = DEFAULT_HARMONIZE  # match the person's light to an image or blurred background

    @property
    def harmonizes(self) -> bool:
        """Whether the light is matched: a strength above 0, a result with colours, and a background
        that has light (an image or the photo blurred); a plain colour has none, so it is ignored there."""
        return self.harmonize > 0 and self.mode != "mask" and self.background in ("image", "blur")

    @property
    def content_type(self) -> str:
        return "image/jpeg" if self.format == "jpeg" else "image/png"


@dataclass(frozen=True)
class ParsedRequest:
    """What one request asks for: the photo's bytes, an optional background's bytes, options."""

    image: bytes
    options: Options
    background_image: bytes | None = None


@dataclass
class Job:
    """A decoded request waiting for its mask."""

    image: Image.Image
    options: Options
    background: Image.Image | None = None
    mask: np.ndarray | None = None
    # the network's probability map (its input size): tells touching people apart for ``keep``
    certainty: torch.Tensor | None = None
    # per keep point, the click network's map of the person there (photo size): None keeps by regions
    choices: list[np.ndarray] | None = None
    network: str = "main"  # which network's look made the mask: "main", or "crowd" (segmenter.crowd)


@dataclass
class Failure:
    """A request that will be answered with ``status`` and ``{"error": message}``."""

    status: int
    message: str


HeaderGetter = Callable[[str], "str | None"]


def _quote(value: str) -> str:
    """``repr`` of a client-supplied string, shortened so an error message stays short."""
    return repr(value) if len(value) <= _QUOTE_CHARS else repr(value[:_QUOTE_CHARS]) + "..."


def _text(value: Any, name: str, limit: int = MAX_OPTION_LENGTH) -> str:
    """A form field or header value as stripped text (fields arrive as bytearray); at most ``limit``
    (``MAX_OPTION_LENGTH``, or ``MAX_KEEP_LENGTH`` for a list of points) long, so nothing big is parsed
    or quoted back."""
    if isinstance(value, (bytes, bytearray, str)) and len(value) > limit:
        raise RequestError(f"option {name!r} is too long ({len(value):,} characters; this option's values are "
                           f"at most {limit}); files go in the multipart fields 'image' or 'background'")
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(f"option {name!r} is not UTF-8 text") from None
    if not isinstance(value, str):
        raise RequestError(f"option {name!r} must be text, got {type(value).__name__}")
    return value.strip()


def _is_text_option(value: bytes | bytearray) -> bool:
    # a colour/keyword when option-sized and plain text; no image format fits in 64 printable ASCII bytes
    return len(value) <= MAX_OPTION_LENGTH and bool(_PRINTABLE.match(bytes(value)))


def _choice(value: str, name: str, allowed: tuple[str, ...]) -> str:
    v = value.lower()
    if v == "jpg" and "jpeg" in allowed:
        v = "jpeg"
    if v not in allowed:
        raise RequestError(f"unknown {name} {value!r}; expected one of: {', '.join(allowed)}")
    return v


def _number(value: str, name: str, low: float, high: float) -> float:
    try:
        x = float(value)
    except ValueError:
        raise RequestError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(x) or not low <= x <= high:
        raise RequestError(f"{name} {value!r} is out of range; expected {low:g} to {high:g}")
    return x


def _background(value: str) -> tuple[int, int, int] | str:
    v = value.lower()
    if v in BACKGROUND_KEYWORDS:
        return v
    try:
        return parse_color(value)
    except ValueError:
        raise RequestError(f"unknown background {value!r}; expected #RRGGBB, blur, transparent "
                           "or an uploaded image in the multipart file field 'background'") from None


def parse_points(value: str) -> tuple[tuple[float, float], ...]:
    """``"x,y;x,y"`` -> points (photo pixels after EXIF orientation); whether they lie inside the photo is
    ``check_points``' job, once the photo is decoded."""
    entries = value.split(KEEP_POINT_SEPARATOR)
    if len(entries) > MAX_KEEP_POINTS:
        raise RequestError(f"keep has {len(entries)} points; at most {MAX_KEEP_POINTS} are allowed")
    points = []
    for number, entry in enumerate(entries, 1):
        parts = entry.split(KEEP_COORD_SEPARATOR)
        try:
            if len(parts) != 2:
                raise ValueError
            x, y = float(parts[0]), float(parts[1])
        except ValueError:
            raise RequestError(f"keep point {number} {_quote(entry.strip())} is badly formed; expected x,y in "
                               f"the photo's pixels, points separated by ';' (e.g. 120,340;610,300)") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise RequestError(f"keep point {number} {_quote(entry.strip())} is not a pair of finite numbers")
        points.append((x, y))
    return tuple(points)


def check_points(points: tuple[tuple[float, float], ...], width: int, height: int) -> None:
    """Every keep point must lie in the photo as decoded (EXIF orientation applied): 0 <= x < width."""
    for number, (x, y) in enumerate(points, 1):
        if not (0 <= x < width and 0 <= y < height):
            raise RequestError(f"keep point {number} ({x:g},{y:g}) is outside the photo, which is {width}x{height} "
                               f"pixels after its EXIF orientation (x 0 to {width - 1}, y 0 to {height - 1})")


def parse_options(raw: Mapping[str, str], has_background_image: bool = False) -> Options:
    """Validate option values (already merged from fields and headers; empty means default)."""
    raw = {k: v for k, v in raw.items() if v != ""}
    mode = _choice(raw.get("mode", "mask"), "mode", MODES)
    fmt = _choice(raw.get("format", "png"), "format", FORMATS)
    refine = _choice(raw.get("refine", "guided"), "refine", REFINE_METHODS)
    tta = _choice(raw.get("tta", "none"), "tta", TTA_MODES)
    zoom = _choice(raw.get("zoom", DEFAULT_ZOOM), "zoom", ZOOM_MODES)
    crowd = _choice(raw.get("crowd", DEFAULT_CROWD), "crowd", CROWD_MODES)
    matting = _choice(raw.get("matting", "on"), "matting", MATTING_MODES) == "on"
    background: tuple[int, int, int] | str = DEFAULT_COLOR
    if has_background_image:
        background = "image"  # an uploaded background wins over a text value
    elif "background" in raw:
        background = _background(raw["background"])
    radius = None
    if "blur_radius" in raw:
        radius = _number(raw["blur_radius"], "blur_radius", *BLUR_RADIUS_RANGE)
    quality = DEFAULT_QUALITY
    if "quality" in raw:
        quality = int(_number(raw["quality"], "quality", *QUALITY_RANGE))
    keep = parse_points(raw["keep"]) if "keep" in raw else ()
    harmonize = DEFAULT_HARMONIZE
    if "harmonize" in raw:
        harmonize = _number(raw["harmonize"], "harmonize", *HARMONIZE_RANGE)
    if fmt == "jpeg" and mode != "composite":
        raise RequestError(f"format jpeg is only for mode composite; mode {mode} is always PNG "
                           "(it needs exact values or an alpha channel)")
    if fmt == "jpeg" and background == "transparent":
        raise RequestError("background transparent needs format png (JPEG has no alpha channel)")
    return Options(mode=mode, background=background, format=fmt, blur_radius=radius, refine=refine,
                   quality=quality, tta=tta, zoom=zoom, crowd=crowd, matting=matting, keep=keep, harmonize=harmonize)


def parse_request(row: Mapping[str, Any], header: HeaderGetter) -> ParsedRequest:
    """Turn one TorchServe request row plus its headers into a ``ParsedRequest``.

    ``header(name)`` returns a request header's value or None (case-insensitive lookup is the
    caller's job). Raises ``RequestError`` for anything a client must fix.
    """
    if not isinstance(row, Mapping):
        raise RequestError("empty request: send an image as the body or as multipart field 'image'")
    raw_key = next((k for k in RAW_BODY_KEYS if k in row), None)
    fields: dict[str, Any] = {}
    if raw_key is not None and len(row) == 1:
        image = row[raw_key]
        if isinstance(image, dict):
            raise RequestError("got a JSON body; send the image itself (Content-Type image/* or "
                               "application/octet-stream) or a multipart form with field 'image'")
        if isinstance(image, str):
            raise RequestError("got a text body; send the image with Content-Type image/* or "
                               "application/octet-stream")
    else:
        fields = dict(row)
        unknown = sorted(str(k) for k in set(fields) - KNOWN_FIELDS)
        if unknown:
            listed = ", ".join(_quote(k) for k in unknown[:_MAX_NAMES_LISTED])
            if len(unknown) > _MAX_NAMES_LISTED:
                listed += f" and {len(unknown) - _MAX_NAMES_LISTED} more"
            raise RequestError(f"unknown multipart field(s) {listed}; "
                               f"known fields: {', '.join(sorted(KNOWN_FIELDS))}")
        if "image" not in fields:
            raise RequestError("multipart request has no 'image' field (the photo to process)")
        image = fields.pop("image")
    if not isinstance(image, (bytes, bytearray)):
        raise RequestError("the image must be sent as binary data (a file field or the raw body)")
    if len(image) == 0:
        raise RequestError("image is empty (0 bytes)")

    background_image: bytes | None = None
    bg_field = fields.get("background")
    if isinstance(bg_field, (bytes, bytearray)) and bg_field and not _is_text_option(bg_field):
        background_image = bytes(bg_field)
        fields.pop("background")

    raw: dict[str, str] = {}
    for name, header_name in OPTION_HEADERS.items():
        limit = MAX_KEEP_LENGTH if name == "keep" else MAX_OPTION_LENGTH
        if name in fields:
            raw[name] = _text(fields[name], name, limit)
        else:
            value = header(header_name)
            if value is not None:
                raw[name] = _text(value, header_name, limit)
    options = parse_options(raw, has_background_image=background_image is not None)
    if options.mode != "composite" and not options.harmonizes:
        background_image = None  # not needed: do not spend time decoding it
    return ParsedRequest(image=bytes(image), options=options, background_image=background_image)
