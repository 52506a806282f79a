"""Replace the background of many photos through a running server (``make serve``).

    python -m handler.client photos/ --out done/                       # white background, PNG
    python -m handler.client a.jpg b.jpg --background beach.jpg --format jpeg --out done/
    python -m handler.client photos/ --mode cutout --out cutouts/      # transparent PNGs
    python -m handler.client photos/ --background blur --out blurred/
    python -m handler.client group.jpg --keep 640,410 --out done/    # only the person at that point
    python -m handler.client me.jpg --background beach.jpg --harmonize 0.6 --out done/  # the beach's light

Each input is sent as a multipart request (docs/API.md); results go to ``--out`` as
``<name>.png`` or ``<name>.jpg``. An existing file is never overwritten unless ``--overwrite``
is given. One failing photo is reported and the others go on; the exit status is 1 if any
failed. With no option, it talks to this project's server (``make serve``): the address and the
key come from ``serve/`` (``server.json``, ``key_file.json``), and an expired or rotated key is
renewed with the key file's API key and the request sent again, so a server left running all day
keeps working. ``--url``/``--key``/``--key-file`` point it at another server.
``Client`` is the library half: tests and benchmarks use it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import mimetypes
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from handler import contract

REPO = Path(__file__).resolve().parent.parent
DEFAULT_URL = contract.INFERENCE_URL
DEFAULT_MODEL = contract.MODEL_NAME
DEFAULT_KEY_FILE = REPO / contract.SERVE_FOLDER / contract.KEY_FILE_NAME
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


class ClientError(RuntimeError):
    """A request that failed; ``status`` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Result:
    """A successful answer: the encoded image and its content type."""

    content: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def extension(self) -> str:
        return ".jpg" if self.content_type == "image/jpeg" else ".png"


def _error_message(r: contract.Answer) -> str:
    """The handler's ``{"error"}`` or TorchServe's ``{"message"}``, else the raw text."""
    raw = r.body.decode("utf-8", "replace")
    try:
        body = json.loads(raw)
        text = (body.get("error") or body.get("message") or json.dumps(body)) if isinstance(body, dict) else raw
    except ValueError:
        text = raw.strip()[:300] or r.reason
    message = f"HTTP {r.status}: {text}"
    if r.status >= 500 and "worker died" in str(text).lower():
        # TorchServe's answer for the requests a worker held when its process ended (killed, often for
        # lack of memory, or crashed); it starts a new worker, so a retry usually works.
        message += ("\n  the server's model worker died (killed, often for lack of memory, or crashed) and is "
                    "being restarted: retry in a few seconds; if it happens again, use a smaller photo or give "
                    "the server more memory (serve/logs/model_log.log)")
    return message


class Client:
    """Talks to ``/predictions/<model>``; thread-safe (one kept-alive connection per thread).

    ``timeout`` bounds each whole request (upload, processing, answer), not each socket read: a
    stuck or trickling server gets a ``ClientError`` after ``timeout`` seconds. The request goes
    through ``contract.post`` under ``contract.run_with_deadline``, the transport the GIMP plug-in uses.
    """

    def __init__(self, url: str = DEFAULT_URL, model: str = DEFAULT_MODEL, key: str | None = None,
                 key_file: str | Path | None = DEFAULT_KEY_FILE, timeout: float = 300.0,
                 management_url: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.key_file = Path(key_file) if key_file else None
        self.typed_key = key is not None
        self._key = key
        self.timeout = timeout
        self.management_url = management_url
        self._local = threading.local()
        self._renewing = threading.Lock()

    @property
    def predictions_url(self) -> str:
        return contract.predictions_url(self.url, self.model)

    def key(self) -> str | None:
        """The inference key: ``--key`` if given, else the key file's (read once, then after each renewal)."""
        if self._key is not None or self.key_file is None:
            return self._key
        try:
            self._key = contract.key_of(contract.read_key_file(self.key_file), "inference", self.key_file)
        except contract.KeyFileError as exc:
            raise ClientError(f"{exc}: is the server running (`make serve`)? Or pass --key-file or --key") from None
        return self._key

    def _renewed_key(self, refused: str | None) -> str | None:
        """A working key after ``refused`` was refused, or None when there is no key file to renew from.

        One thread renews at a time; a thread that finds the key already changed by another (or by
        ``handler.serve rotate-key``) takes that key instead of making yet another, which would
        invalidate the one the first thread is about to use.
        """
        if self.typed_key or self.key_file is None:
            return None
        with self._renewing:
            if self._key is not None and self._key != refused:
                return self._key
            management = self.management_url or contract.management_url_for(self.key_file, self.url)
            try:
                self._key = contract.fresh_inference_key(self.key_file, refused or "", management)
            except contract.KeyFileError as exc:
                raise ClientError(f"the server refused the inference key and it could not be renewed: {exc}. "
                                  "Check that --key-file belongs to the server at --url") from None
            return self._key

    def _post(self, body: bytes, headers: Mapping[str, str]) -> contract.Answer:
        """One POST within ``timeout``, on this thread's kept-alive connection; ``ClientError`` when the
        server cannot be reached, hangs up or runs past the deadline."""
        connection = getattr(self._local, "connection", None)
        self._local.connection = None  # a request that fails leaves no connection to reuse
        try:
            answer, self._local.connection = contract.run_with_deadline(
                lambda deadline: contract.post(self.predictions_url, body, headers, deadline, connection),
                self.timeout)
        except (contract.DeadlineExceeded, OSError, http.client.HTTPException) as exc:
            raise self._failure(exc) from None
        return answer

    def _failure(self, exc: BaseException) -> ClientError:
        """A transport failure (no HTTP status) in words: refused, timed out, or dropped mid-request."""
        if isinstance(exc, (contract.DeadlineExceeded, TimeoutError, socket.timeout)):
            # also an upload that stalled because the server stopped reading
            return ClientError(f"no answer from {self.url} within {self.timeout:g} s: the server is busy or stuck "
                               "(`.venv/bin/python -m handler.serve status`); a larger --timeout helps for huge "
                               "photos")
        if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
            return ClientError(f"cannot connect to {self.url}: is the server running (`make serve`)?")
        return ClientError(f"the server at {self.url} closed the connection before answering "
                           f"({type(exc).__name__}: {exc}): it was stopped or restarted, or its worker died. "
                           "Check `.venv/bin/python -m handler.serve status` and serve/logs/, then retry")

    def process(self, image: bytes | str | Path, *, mode: str = "composite", background: str | None = None,
                background_image: bytes | str | Path | None = None, format: str | None = None,
                refine: str | None = None, blur_radius: float | None = None,
                quality: int | None = None, tta: str | None = None, matting: str | None = None,
                zoom: str | None = None, keep: str | Sequence[tuple[float, float]] | None = None,
                harmonize: float | None = None, crowd: str | None = None) -> Result:
        """Send one photo; return the result or raise ``ClientError`` with the server's message.

        ``keep`` is ``"x,y;x,y"`` or a list of (x, y) points in the photo's pixels (after its EXIF
        orientation); ``harmonize`` a strength from 0 to 1 (docs/API.md).
        """
        if keep is not None and not isinstance(keep, str):
            keep = contract.KEEP_POINT_SEPARATOR.join(f"{x:g}{contract.KEEP_COORD_SEPARATOR}{y:g}" for x, y in keep)
        data = {"mode": mode, "background": background, "format": format, "refine": refine, "tta": tta,
                "matting": matting, "zoom": zoom, "crowd": crowd, "keep": keep,
                "harmonize": None if harmonize is None else str(harmonize),
                "blur_radius": None if blur_radius is None else str(blur_radius),
                "quality": None if quality is None else str(quality)}
        files = {contract.IMAGE_FIELD: _file_part(image, "image")}
        if background_image is not None:
            files[contract.BACKGROUND_FIELD] = _file_part(background_image, "background")
        body, content_type = _multipart({k: v for k, v in data.items() if v is not None}, files)
        key = self.key()
        for attempt in (0, 1):
            headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {key}"} if key else {})}
            r = self._post(body, headers)
            if r.status == 200:
                return Result(r.body, r.headers.get("Content-Type", ""), dict(r.headers.items()))
            invalid_key = contract.is_invalid_key_answer(r.status, r.body)
            if invalid_key and attempt == 0:
                key = self._renewed_key(key)  # expired or rotated: renew from the key file, retry once
                if key is not None:
                    continue
            message = _error_message(r)
            if invalid_key:
                message += _key_hint(self.typed_key)
            raise ClientError(message, r.status)
        raise AssertionError("unreachable")


def _multipart(fields: Mapping[str, str], files: Mapping[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body (docs/API.md) and its content type; file names are made ASCII."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                     + value.encode("utf-8") + b"\r\n")
    for name, (filename, data, ctype) in files.items():
        safe = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe}"\r\n'
                f"Content-Type: {ctype}\r\n\r\n")
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _key_hint(typed: bool) -> str:
    """How to get past a refused key: the key file renews itself, a typed key does not."""
    if typed:
        return (f"\n  the key given with --key is wrong or expired (keys last {contract.KEY_LIFETIME_MIN} minutes): "
                "leave --key out so the client reads the key file and renews the key itself, or pass the "
                "current one (`.venv/bin/python -m handler.serve key`)")
    return ("\n  the key file's inference key was refused even after a renewal: the key file belongs to "
            "another server than --url (pass the matching --key-file), or pass --key")


def _file_part(source: bytes | str | Path, name: str) -> tuple[str, bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        return (name, bytes(source), "application/octet-stream")
    path = Path(source)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ClientError(f"{path}: cannot read: {exc.strerror}") from None
    return (path.name, data, mimetypes.guess_type(path.name)[0] or "application/octet-stream")


def find_images(inputs: Iterable[str | Path]) -> Iterator[Path]:
    """Files as given; folders expanded (sorted, not recursive) to their image files."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


@dataclass
class Summary:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def replace_backgrounds(client: Client, inputs: Sequence[Path], out_dir: Path, *, overwrite: bool = False,
                        jobs: int = 2, log=print, **options) -> Summary:
    """Process ``inputs`` into ``out_dir``; per-file errors are collected, never raised.

    The output extension follows the request (``.jpg`` for ``format=jpeg``) so a name can be
    checked for collisions before any upload.
    """
    ext = ".jpg" if options.get("format") == "jpeg" else ".png"
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    planned: dict[Path, Path] = {}
    todo: list[tuple[Path, Path]] = []
    for src in inputs:
        dst = out_dir / f"{src.stem}{ext}"
        if dst in planned:
            summary.failed.append((src, f"same output name as {planned[dst]} ({dst}); rename one of them"))
        elif dst.exists() and not overwrite:
            summary.skipped.append(src)
            log(f"skip   {src}: {dst} exists (use --overwrite)")
        else:
            planned[dst] = src
            todo.append((src, dst))
    lock = threading.Lock()
    count = [0]

    def work(item: tuple[Path, Path]) -> None:
        src, dst = item
        t0 = time.monotonic()
        error = None
        try:
            result = client.process(src, **options)
            tmp = dst.with_name(f".{dst.name}.part")  # never leave half a file under the real name
            tmp.write_bytes(result.content)
            tmp.replace(dst)
        except (ClientError, OSError) as exc:
            error = str(exc)
        with lock:
            count[0] += 1
            if error is None:
                summary.done.append(src)
                log(f"[{count[0]}/{len(todo)}] {src} -> {dst} ({time.monotonic() - t0:.1f} s)")
            else:
                summary.failed.append((src, error))
                log(f"[{count[0]}/{len(todo)}] {src} FAILED: {error}")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(work, todo))
    return summary


def keep_points(text: str) -> str:
    """An argparse type for ``--keep``: ``X,Y`` or ``X,Y;X,Y``, checked here so a typo fails before any
    upload (whether the points lie inside each photo only the server can tell)."""
    points = [p.strip() for p in text.split(contract.KEEP_POINT_SEPARATOR)]
    for point in points:
        parts = point.split(contract.KEEP_COORD_SEPARATOR)
        try:
            if len(parts) != 2:
                raise ValueError
            float(parts[0]), float(parts[1])
        except ValueError:
            raise argparse.ArgumentTypeError(f"{point!r} is not a point X,Y in the photo's pixels "
                                             "(e.g. --keep 640,410)") from None
    return contract.KEEP_POINT_SEPARATOR.join(points)


def strength(text: str) -> float:
    """An argparse type for ``--harmonize``: a number in ``contract.HARMONIZE_RANGE``."""
    low, high = contract.HARMONIZE_RANGE
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{text} is outside {low:g} to {high:g}")
    return value


def _server_of(args: argparse.Namespace) -> tuple[str, str]:
    """(inference URL, model): as given, else as ``handler.serve`` recorded them beside the key file,
    so the client follows a server started on other ports or with another model without options."""
    state = {} if args.url or args.key else contract.server_state(args.key_file)
    url = args.url or state.get("inference_url") or DEFAULT_URL
    model = args.model or (state.get("model_name") if not args.url else None) or DEFAULT_MODEL
    return url, model


def build_parser() -> argparse.ArgumentParser:
    """The command line: what to send (the API's options), where, and how many at once."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    p.add_argument("--out", type=Path, required=True, help="output folder (created if needed)")
    p.add_argument("--mode", default="composite", choices=list(contract.MODES))
    p.add_argument("--background", default=None,
                   help="#RRGGBB, blur, transparent, or an image file to put behind the person (default white)")
    p.add_argument("--format", choices=list(contract.FORMATS), help="output format (jpeg only for composites)")
    p.add_argument("--refine", choices=list(contract.REFINE_METHODS), help="edge refinement (default guided)")
    p.add_argument("--tta", choices=list(contract.TTA_MODES),
                   help="flip: also segment the mirrored photo and average (more accurate, slower; default none)")
    p.add_argument("--matting", choices=list(contract.MATTING_MODES),
                   help="the edge stage for cutout/composite: a soft matte and the person's own colours at the "
                        "outline (default on; off: the photo blended through the mask as it is)")
    p.add_argument("--zoom", choices=list(contract.ZOOM_MODES),
                   help="a second, closer look for small people: on (every photo), auto (only where the first look "
                        "finds no tall person), off (default)")
    p.add_argument("--crowd", choices=list(contract.CROWD_MODES),
                   help="the network trained on groups and small people: auto (default: only where the first "
                        "look shows several people or no tall one), on (every photo), off")
    p.add_argument("--keep", type=keep_points, action="append", metavar="X,Y",
                   help="keep only the person at this point (photo pixels, after EXIF orientation) or nearest to "
                        "it, dropping the others; repeat it or write X,Y;X,Y for more people. The same points go "
                        f"with every photo (at most {contract.MAX_KEEP_POINTS})")
    p.add_argument("--harmonize", type=strength, metavar="STRENGTH",
                   help="match the person's light to the background, 0 (off, default) to 1; needs an image "
                        "or blur background (ignored on a colour)")
    p.add_argument("--blur-radius", type=float, help="background blur radius in pixels")
    p.add_argument("--quality", type=int, help="JPEG quality 1-100")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--url", help="inference address (default: the one recorded beside --key-file, "
                   f"else {DEFAULT_URL})")
    p.add_argument("--model", help="model name (default: the served one recorded beside --key-file, "
                   f"else {DEFAULT_MODEL})")
    p.add_argument("--key", help="inference key; not renewed when it expires (default: read from --key-file)")
    p.add_argument("--key-file", type=Path, default=DEFAULT_KEY_FILE,
                   help="TorchServe's key file; its API key renews an expired inference key "
                   "(default: serve/key_file.json)")
    p.add_argument("--management-url", help="management address, for renewing keys (default: the one recorded "
                   "beside --key-file, else the inference port + 1)")
    p.add_argument("--jobs", type=int, default=2, help="requests in flight (default 2)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request, upload to answer")
    return p


def request_options(args: argparse.Namespace) -> dict:
    """The API options the command line asked for (None: the server's default)."""
    options = {"mode": args.mode, "format": args.format, "refine": args.refine, "blur_radius": args.blur_radius,
               "quality": args.quality, "tta": args.tta, "matting": args.matting, "zoom": args.zoom,
               "crowd": args.crowd,
               "keep": contract.KEEP_POINT_SEPARATOR.join(args.keep) if args.keep else None,
               "harmonize": args.harmonize}
    if args.background and Path(args.background).is_file():
        options["background_image"] = Path(args.background)
    else:
        options["background"] = args.background
    return options


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = request_options(args)
    inputs = list(find_images(args.inputs))
    missing = [str(x) for x in inputs if not x.is_file()]
    if missing:
        print(f"client: error: not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    if not inputs:
        print("client: error: no images found in the given folders", file=sys.stderr)
        return 2
    client = Client(*_server_of(args), args.key, None if args.key else args.key_file, args.timeout,
                    args.management_url)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    t0 = time.monotonic()
    summary = replace_backgrounds(client, inputs, args.out, overwrite=args.overwrite, jobs=args.jobs, log=log,
                                  **options)
    log(f"client: {len(summary.done)} done, {len(summary.skipped)} skipped, {len(summary.failed)} failed "
        f"in {time.monotonic() - t0:.1f} s")
    for src, why in summary.failed:
        log(f"  failed: {src}: {why}")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
