"""TorchServe handler: person mask, cut-out or new-background composite at the photo's resolution.

The contract is docs/API.md. Each request of a batch is parsed and decoded on its own; one that
fails gets its own 4xx status and a JSON ``{"error": ...}`` body through
``context.set_response_status(code, reason, idx)`` while the rest of the batch is served. Raising
would fail the whole batch (TorchServe answers every request of it with the same error), so
only a failure of the model itself is allowed to propagate.

The archive ships the ``segmenter`` package next to this file, so decoding, pre-processing,
upsampling and compositing are the exact code training and evaluation use.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from ts.torch_handler.base_handler import BaseHandler

_here = os.path.dirname(os.path.abspath(__file__))
_root = os.path.dirname(_here)
for _p in (_root, _here):  # repo checkout: packages live in the parent; archive: next to this file
    if os.path.isdir(os.path.join(_p, "segmenter")) and _p not in sys.path:
        sys.path.insert(0, _p)

from handler.contract import MODEL_NAME, default_blur_radius  # noqa: E402
from handler.request import Failure, Job, RequestError, check_points, parse_request  # noqa: E402
from handler.shared_key import REFUSED_MESSAGE, REFUSED_STATUS, authorized, load_key  # noqa: E402
from segmenter import checkpoint, chooser, crowd, harmonize, imaging, matting, people  # noqa: E402
from segmenter.inference import Segmenter  # noqa: E402
from segmenter.preprocess import DEFAULT_IMAGE_SIZE  # noqa: E402

logger = logging.getLogger(__name__)
WEIGHTS_NAME = "weights.pt"
CHOOSER_NAME = "chooser.pt"  # the click network for ``keep`` (segmenter.chooser); an archive may leave it out
CROWD_NAME = "crowd.pt"  # the network for photos of groups (segmenter.crowd); an archive may leave it out
# TorchServe marks the requests of its other entry points with these headers (value "True"):
# ``POST /explanations/<model>`` ("explain") and ``GET /models/<model>?customized=true`` ("describe").
# BaseHandler would send them to Captum's ``get_insights`` and to an empty ``describe_handle``; this
# model has neither, so they are answered like any other request it cannot serve.
UNSUPPORTED_ROUTES = {
    "explain": f"explanations are not supported by this model; POST the photo to /predictions/{MODEL_NAME} "
               "for a mask, cut-out or composite (docs/API.md)",
    "describe": "a customized description is not supported by this model; GET /models/<name> without "
                "customized=true describes it, and docs/API.md lists what it accepts",
}
UNSUPPORTED_STATUS = 400
THREADS_ENV = "SEGMENTER_TORCH_THREADS"


def torch_threads(cpus: int, workers: int) -> int:
    """Intra-op threads per worker: the cores shared out, never fewer than one.

    TorchServe sets no thread count, and torch's default (all cores) in every worker
    oversubscribes a small machine: two workers at two threads on two cores went erratic.
    """
    return max(1, cpus // max(1, workers))


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _configure_threads(model_yaml: dict[str, Any]) -> int:
    forced = os.environ.get(THREADS_ENV)
    workers = int(model_yaml.get("maxWorkers") or model_yaml.get("minWorkers") or 1)
    n = int(forced) if forced else torch_threads(_cpu_count(), workers)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)  # one request at a time per worker: no use for more
    except RuntimeError:  # already set, or parallel work already started (tests)
        pass
    return n


def _header_getter(context: Any, idx: int) -> Callable[[str], str | None]:
    """Case-insensitive request-header lookup for request ``idx``; returns str or None.

    The values include the client's Authorization header: never log what this returns wholesale.
    """
    def get(name: str) -> str | None:
        value = context.get_request_header(idx, name)
        if value is None:
            try:
                headers = context.get_all_request_header(idx) or {}
            except (AttributeError, IndexError, TypeError):
                headers = {}
            lowered = name.lower()
            value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == lowered), None)
        return value if isinstance(value, str) else None
    return get


class PersonSegmenterHandler(BaseHandler):
    """Serves ``mask``, ``cutout`` and ``composite`` (see docs/API.md)."""

    def initialize(self, context: Any) -> None:
        """Load ``weights.pt`` from the unpacked archive (weights_only, no pickled code)."""
        self.context = context
        model_yaml = getattr(context, "model_yaml_config", None) or {}
        threads = _configure_threads(model_yaml)
        gpu_id = context.system_properties.get("gpu_id")
        device = f"cuda:{gpu_id}" if torch.cuda.is_available() and gpu_id is not None else "cpu"
        model, config = checkpoint.load_model(os.path.join(context.system_properties["model_dir"], WEIGHTS_NAME))
        crowd_file = os.path.join(context.system_properties["model_dir"], CROWD_NAME)
        # without it, every photo keeps the main network's look
        crowd_model = crowd.load(crowd_file, config) if os.path.isfile(crowd_file) else None
        self.segmenter = Segmenter(model, config.get("image_size", DEFAULT_IMAGE_SIZE), device,
                                   crowd_model=crowd_model)
        click_file = os.path.join(context.system_properties["model_dir"], CHOOSER_NAME)
        self.chooser = None
        if os.path.isfile(click_file):  # without it, keep tells people apart by the mask's regions alone
            self.chooser = chooser.Chooser(chooser.load(click_file)[0], self.segmenter.device, self.segmenter.amp)
        self.shared_key = load_key()  # the container's one key for every replica; None under `make serve`
        self.initialized = True
        logger.info("person segmenter ready: %s, input %dpx, %d torch thread(s), amp=%s, keep by %s, %s",
                    device, self.segmenter.image_size, threads, self.segmenter.amp,
                    "click network" if self.chooser is not None else "regions",
                    "crowd network" if crowd_model is not None else "no crowd network")

    def handle(self, data: list[Any], context: Any) -> list[bytes]:
        """Every request of the batch, whatever TorchServe route it came by, through the same three steps.

        ``BaseHandler.handle`` branches on the first request's headers to Captum explanations and a
        describe hook this model does not have: an explanation request made the worker raise
        (``AttributeError: get_insights``) and TorchServe answered 503. Here ``preprocess`` turns such
        a request into its own 400, like any other request the handler cannot serve.
        """
        start = time.time()
        self.context = context
        out = self.postprocess(self.inference(self.preprocess(data)))
        context.metrics.add_time("HandlerTime", round((time.time() - start) * 1000, 2), None, "ms")
        return out

    def preprocess(self, data: list[Any]) -> list[Job | Failure]:
        """Parse and decode every request; a bad one becomes a ``Failure`` for its index only."""
        jobs: list[Job | Failure] = []
        for idx, row in enumerate(data):
            route = next((name for name in UNSUPPORTED_ROUTES if self.context.get_request_header(idx, name) == "True"),
                         None)
            if route is not None:
                jobs.append(Failure(UNSUPPORTED_STATUS, UNSUPPORTED_ROUTES[route]))
                continue
            get = _header_getter(self.context, idx)
            if getattr(self, "shared_key", None) is not None and not authorized(get("Authorization"), self.shared_key):
                jobs.append(Failure(REFUSED_STATUS, REFUSED_MESSAGE))
                continue
            try:
                req = parse_request(row, get)
                image = imaging.decode_image(req.image)
                check_points(req.options.keep, *image.size)  # keep points must lie in the photo as decoded
                background = None
                if req.background_image is not None:
                    background = imaging.decode_image(req.background_image, what="background image")
                jobs.append(Job(image, req.options, background))
            except (RequestError, imaging.ImageError) as exc:
                jobs.append(Failure(exc.status, str(exc)))
            except MemoryError:
                jobs.append(Failure(507, "not enough memory to decode this image"))
        return jobs

    def inference(self, jobs: list[Job | Failure], *args: Any, **kwargs: Any) -> list[Job | Failure]:
        """One forward pass for all decoded photos, then each mask upsampled with its own method.

        This is ``Segmenter.predict`` with a per-request ``refine`` and ``tta`` (requests that differ
        in ``tta`` share a batch but not a forward pass); the tests check the served mask equals
        ``Segmenter.predict``'s.
        """
        todo = [j for j in jobs if isinstance(j, Job)]
        # one pass per tta mode and crowd setting present in the batch
        for tta, who in sorted({(j.options.tta, j.options.crowd) for j in todo}):
            group = [j for j in todo if (j.options.tta, j.options.crowd) == (tta, who)]
            with torch.inference_mode():
                probs, sent = self.segmenter.looks([j.image for j in group], tta, who)
                for job, prob, by_crowd in zip(group, probs, sent, strict=True):
                    job.mask = self.segmenter.full_mask(prob, job.image, job.options.refine, tta, job.options.zoom)
                    job.certainty = prob if job.options.keep else None
                    job.network = "crowd" if by_crowd else "main"
        pick = getattr(self, "chooser", None)
        for job in todo:
            if job.options.keep and pick is not None:  # who each point is, weighed against their rivals
                job.choices = pick.choose(self.segmenter, job.image, job.options.keep, job.options.tta,
                                          job.certainty)
        return jobs

    def postprocess(self, jobs: list[Job | Failure]) -> list[bytes]:
        """Encode each answer and set its content type, status and headers."""
        out = []
        for idx, job in enumerate(jobs):
            # How many requests shared this forward pass: lets clients and tests see batching work.
            self.context.set_response_header(idx, "X-Batch-Size", str(len(jobs)))
            if isinstance(job, Job):
                try:
                    body = render(job)
                    self.context.set_response_content_type(idx, job.options.content_type)
                    self.context.set_response_header(idx, "X-Image-Size", f"{job.image.width}x{job.image.height}")
                    self.context.set_response_header(idx, "X-Network", job.network)
                    out.append(body)
                    continue
                except MemoryError:
                    job = Failure(507, "not enough memory to render this result")
                except Exception:  # a bug must not take the rest of the batch down
                    logger.exception("rendering request %d failed", idx)
                    job = Failure(500, "internal error while rendering the result (see the server log)")
            out.append(self._error(idx, job))
        return out

    def _error(self, idx: int, failure: Failure) -> bytes:
        """Fail request ``idx`` alone; the JSON body has the whole message, the status line a short one.

        TorchServe sends the phrase given here as the HTTP reason phrase: it must stay one short line
        whatever a message quotes (a 44 KB phrase made clients drop the connection instead of reading a 400).
        """
        self.context.set_response_status(failure.status, reason_phrase(failure.message), idx)
        self.context.set_response_content_type(idx, "application/json")
        return json.dumps({"error": failure.message}).encode("utf-8")


MAX_REASON_PHRASE = 200


def reason_phrase(message: str) -> str:
    """``message`` as an HTTP reason phrase: printable ASCII on one line, at most ``MAX_REASON_PHRASE`` long."""
    phrase = "".join(c if " " <= c <= "~" else " " for c in message)
    return phrase if len(phrase) <= MAX_REASON_PHRASE else phrase[:MAX_REASON_PHRASE - 3] + "..."


def render(job: Job) -> bytes:
    """The encoded answer for a job whose mask is computed."""
    opts, image, mask = job.options, job.image, job.mask
    assert mask is not None
    if opts.keep and job.choices is not None:  # choose who stays: the people no point chose leave the mask,
        mask = people.keep_chosen(mask, opts.keep, job.choices, job.certainty)  # cut-out and composite
    elif opts.keep:
        mask = people.keep_people(mask, opts.keep, job.certainty)
    if opts.mode == "mask":
        return imaging.encode_png(mask)
    photo = image
    if opts.matting:  # a soft matte and the person's own colours at the outline: no fringe of the old background
        edge = matting.matte(image, mask)
        photo, mask = edge.foreground, edge.alpha
    background: Image.Image | tuple[int, int, int] | None = None
    if opts.harmonizes or (opts.mode == "composite" and opts.background != "transparent"):
        background = _background(job)
    if opts.harmonizes:  # the person's colours moved from the photo's light to the new background's
        assert isinstance(background, Image.Image)
        photo = harmonize.harmonize(photo, mask, image, background, opts.harmonize)
    if opts.mode == "cutout" or opts.background == "transparent":
        return imaging.encode_png(imaging.cutout(photo, mask))
    assert background is not None
    result = imaging.composite(photo, mask, background)
    if opts.format == "jpeg":
        return imaging.encode_jpeg(result, quality=opts.quality)
    return imaging.encode_png(result)


def _background(job: Job) -> Image.Image | tuple[int, int, int]:
    """What goes behind the person: the uploaded image fitted to the photo, the photo blurred, or a colour."""
    opts, image = job.options, job.image
    if opts.background == "image":
        assert job.background is not None
        return imaging.cover(job.background, image.size)
    if opts.background == "blur":
        return imaging.blurred(image, opts.blur_radius or default_blur_radius(*image.size))
    assert isinstance(opts.background, tuple)
    return opts.background  # an RGB tuple
