"""The committed input corpus (tests/corpus, written by make_corpus.py) through the handler in-process
and through a real TorchServe, and option fields far too long to be options.

Bad files: a 4xx with a JSON ``error`` that names the problem, and the next request is served (by the
same worker, when served). Odd but valid photos: 200, the upright size (EXIF-rotated: width and height
swapped), and aligned: in-process the stub "brightness" model's mask sits on the known subject; served,
the cut-out's colour channels are exactly ``imaging.decode_image`` of the same bytes (so the server
decoded the same upright pixels, whatever the model) and its alpha is ``Segmenter.predict``'s mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handler.person_handler import MAX_REASON_PHRASE
from handler.request import MAX_OPTION_LENGTH
from segmenter import imaging
from segmenter.inference import Segmenter
from tests.corpus import make_corpus
from tests.corpus.make_corpus import BAD, VALID, Bad, Valid
from tests.handler import images
from tests.handler.fakes import form, raw, run
from tests.handler.served import as_image, post, worker_pids

PNG = images.encode(images.subject_photo())  # the good request sent after each bad one
MB = 1_000_000


def corpus_file(name: str) -> bytes:
    return (make_corpus.CORPUS_DIR / name).read_bytes()


def _ids(case: Bad | Valid) -> str:
    return case.name


# --- the corpus itself ----------------------------------------------------------------------------

def test_corpus_is_complete_small_and_reproducible(tmp_path: Path) -> None:
    """The committed files are exactly what make_corpus.py writes (same names; same bytes on two runs)."""
    committed = {p.name for p in make_corpus.CORPUS_DIR.iterdir() if p.is_file() and p.suffix not in (".py", ".md")}
    assert committed == {c.name for c in (*BAD, *VALID)}, "run: .venv/bin/python tests/corpus/make_corpus.py"
    assert sum(len(corpus_file(n)) for n in committed) <= make_corpus.MAX_CORPUS_BYTES
    assert make_corpus.build() == make_corpus.build()  # fixed seeds, no timestamps


# --- in-process -----------------------------------------------------------------------------------

def _bad_row(case: Bad) -> dict:
    data = corpus_file(case.name)
    return form(PNG, mode="composite", background=data) if case.field == "background" else raw(data)


@pytest.mark.parametrize("case", BAD, ids=_ids)
def test_bad_file_in_process(handler, case: Bad) -> None:
    (a,) = run(handler, [_bad_row(case)])
    assert (a.status, a.content_type) == (case.status, "application/json"), case.why
    assert all(word in a.error() for word in case.words), a.error()
    assert len(a.reason) <= MAX_REASON_PHRASE
    (ok,) = run(handler, [raw(PNG)])
    assert ok.image().size == images.SUBJECT_SIZE


@pytest.mark.parametrize("case", VALID, ids=_ids)
def test_odd_valid_file_gives_an_upright_mask_on_the_subject(stub_handler, case: Valid) -> None:
    """The stub model calls bright pixels person, so the mask must be the subject's rectangle:
    a missed EXIF turn, a flip, the wrong GIF frame or a wrong transparency fill would move it."""
    (a,) = run(stub_handler, [raw(corpus_file(case.name))])
    img = a.image()
    w, h = case.size
    assert img.mode == "L" and img.size == (w, h) and a.headers["X-Image-Size"] == f"{w}x{h}"
    mask = np.asarray(img)
    x0, y0, x1, y1 = case.box
    inside = mask[y0 + 5:y1 - 5, x0 + 5:x1 - 5]
    outside = np.ones_like(mask, bool)
    outside[y0 - 5:y1 + 5, x0 - 5:x1 + 5] = False
    assert inside.min() >= 200 and inside.mean() >= 245, (inside.min(), inside.mean())
    assert mask[outside].max() <= 60 and mask[outside].mean() <= 3, (mask[outside].max(), mask[outside].mean())
    rows, cols = np.nonzero(mask >= 128)  # the 50% contour within 2 px of the subject's edges
    assert abs(cols.min() - x0) <= 2 and abs(cols.max() + 1 - x1) <= 2
    assert abs(rows.min() - y0) <= 2 and abs(rows.max() + 1 - y1) <= 2


# Option fields far longer than any option. Before the bound, a 1 MB `mode` field was quoted whole in
# the error, which TorchServe also sends as the HTTP reason phrase: the client got a 1 MB status line
# and dropped the connection instead of reading a 400.
OVERSIZED = {
    "1 MB mode field": (form(PNG, mode="a" * MB), {}, 400, "too long"),
    "8 KB X-Mode header": (raw(PNG), {"X-Mode": "a" * 8000}, 400, "too long"),
    "1 MB background text, composite": (form(PNG, mode="composite", background="b" * MB), {}, 400,
                                        "background image is not an image"),
    "1 MB field name": (form(PNG, **{"x" * MB: "1"}), {}, 400, "unknown multipart field"),
    "5000 unknown fields": (form(PNG, **{f"f{i}": "1" for i in range(5000)}), {}, 400, "and 4995 more"),
}


@pytest.mark.parametrize("case", sorted(OVERSIZED))
def test_oversized_option_is_a_short_4xx_in_process(handler, case: str) -> None:
    row, headers, status, words = OVERSIZED[case]
    (a,) = run(handler, [row], [headers])
    assert a.status == status and words in a.error(), a.error()[:300]
    assert len(a.error()) < 400 and len(a.reason) <= MAX_REASON_PHRASE
    (ok,) = run(handler, [raw(PNG)])
    assert ok.image().size == images.SUBJECT_SIZE


def test_long_background_text_is_ignored_outside_composite(handler) -> None:
    """Documented: a ``background`` field that is not a short text is an upload, and only
    ``composite`` decodes an uploaded background."""
    (a,) = run(handler, [form(PNG, background="b" * MB)])
    assert a.image().size == images.SUBJECT_SIZE


def test_option_at_the_limit_is_still_parsed(handler) -> None:
    """The bound refuses only what cannot be an option: a value of exactly the limit gets the
    ordinary 'unknown mode' answer, one character more 'too long'."""
    (a, b) = run(handler, [form(PNG, mode="m" * MAX_OPTION_LENGTH), form(PNG, mode="m" * (MAX_OPTION_LENGTH + 1))])
    assert "unknown mode" in a.error() and "too long" in b.error()


# --- served ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_segmenter(serving_checkpoint: Path) -> Segmenter:
    """The in-process path the server must agree with."""
    return Segmenter.from_checkpoint(serving_checkpoint, device="cpu")


def _send_bad(server, case: Bad):
    data = corpus_file(case.name)
    if case.field == "background":
        return post(server, files={"image": ("photo.png", PNG, "image/png"),
                                   "background": (case.name, data, "application/octet-stream")},
                    fields={"mode": "composite"})
    return post(server, data)


@pytest.mark.serve
@pytest.mark.parametrize("case", BAD, ids=_ids)
def test_bad_file_served(torchserve_server, case: Bad) -> None:
    before = worker_pids(torchserve_server)
    r = _send_bad(torchserve_server, case)
    assert r.status_code == case.status, (case.why, r.status_code, r.text[:300])
    assert r.headers["Content-Type"].startswith("application/json")
    assert all(word in r.json()["error"] for word in case.words), r.json()
    assert as_image(post(torchserve_server, PNG)).size == images.SUBJECT_SIZE
    assert worker_pids(torchserve_server) == before  # no worker died and restarted


@pytest.mark.serve
@pytest.mark.parametrize("case", VALID, ids=_ids)
def test_odd_valid_file_served_upright_and_aligned(torchserve_server, local_segmenter: Segmenter,
                                                   case: Valid) -> None:
    data = corpus_file(case.name)
    r = post(torchserve_server, data, headers={"X-Mode": "cutout", "X-Matting": "off"})  # photo and mask as they are
    cut = np.asarray(as_image(r))
    w, h = case.size
    assert cut.shape == (h, w, 4) and r.headers["X-Image-Size"] == f"{w}x{h}"
    photo = imaging.decode_image(data)
    # the server's photo is the in-process decoding, pixel for pixel, with the subject where it belongs
    np.testing.assert_array_equal(cut[..., :3], np.asarray(photo))
    x0, y0, x1, y1 = case.box
    red = cut[..., 0]
    outside = np.ones_like(red, bool)
    outside[y0 - 2:y1 + 2, x0 - 2:x1 + 2] = False
    assert red[y0 + 2:y1 - 2, x0 + 2:x1 - 2].min() >= 150 and red[outside].max() <= 100
    # and its mask is Segmenter.predict's (within 1 level)
    local = local_segmenter.predict([photo])[0]
    diff = np.abs(cut[..., 3].astype(int) - local.astype(int))
    assert diff.max() <= 1, f"max difference {diff.max()}, {np.count_nonzero(diff)} pixels differ"


@pytest.mark.serve
def test_oversized_options_served(torchserve_server) -> None:
    """Each gets a readable 4xx (a short status line, a JSON error) and the worker serves on."""
    before = worker_pids(torchserve_server)
    png = ("photo.png", PNG, "image/png")
    cases = [
        (post(torchserve_server, files={"image": png}, fields={"mode": "a" * MB}), "too long"),
        (post(torchserve_server, PNG, headers={"X-Mode": "a" * 4000}), "too long"),
        (post(torchserve_server, files={"image": png}, fields={"mode": "composite", "background": "b" * MB}),
         "background image is not an image"),
        (post(torchserve_server, files={"image": png}, fields={"x" * MB: "1"}), "unknown multipart field"),
        (post(torchserve_server, files={"image": png}, fields={f"f{i}": "1" for i in range(5000)}),
         "and 4995 more"),
    ]
    for r, words in cases:
        assert r.status_code == 400 and len(r.reason) <= MAX_REASON_PHRASE, (words, r.status_code, r.reason[:100])
        assert words in r.json()["error"] and len(r.text) < 400, r.text[:300]
    # Headers over Netty's limit (about 8 KB) never reach the handler: TorchServe's own 400.
    r = post(torchserve_server, PNG, headers={"X-Mode": "a" * MB})
    assert r.status_code == 400 and r.json()["type"] == "BadRequestException", r.text[:300]
    assert as_image(post(torchserve_server, PNG)).size == images.SUBJECT_SIZE
    assert worker_pids(torchserve_server) == before
