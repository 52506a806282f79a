"""The documentation holds together: links resolve, named `make` targets exist, sizes hold, and the
product speaks of itself, not of how it was made.

Each check reads the files git would commit (tracked, plus new files not ignored), so a page that is
written but not yet added is checked too, and a file deleted from the working tree is not.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

README_LIMIT = 12_000  # characters: a newcomer reads it through
MODEL_CARD_LIMIT = 20_000

# "session 3", "Sessions 9–10", "issue 17": words about how the project was made, not what it is.
HISTORY = re.compile(r"\bsessions? [0-9]|\bissues? [0-9]", re.IGNORECASE)
SHARED = "../shared"  # the build machine's data folder; users do not have it

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target "title"), ![alt](target); the target may be wrapped in <>.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_SRC = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//|#)", re.IGNORECASE)  # http:, mailto:, //host, #anchor
# `make` as a command: at the start of a line or after a shell separator, not "ship.py (make a run ...)".
MAKE = re.compile(r"(?:^\s*|[;&|]\s*)make((?:[ \t]+[^\s;&|#`()]+)+)")
PLACEHOLDER = re.compile(r"<[^<>]*>")
TARGET_LINE = re.compile(r"^([A-Za-z0-9_.%/-]+(?:[ \t]+[A-Za-z0-9_.%/-]+)*)[ \t]*::?(?!=)")


@cache
def project_files() -> tuple[str, ...]:
    """Paths git would commit, relative to the repository, that exist in the working tree."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO, capture_output=True, check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout, so no list of the project's files: {exc}")
    return tuple(sorted({p for p in out.split("\0") if p and (REPO / p).is_file()}))


def text_of(path: str) -> str | None:
    """The file's text, or None for a binary file (pictures, weights)."""
    data = (REPO / path).read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def markdown_files() -> list[str]:
    return [p for p in project_files() if p.endswith(".md")]


def split_code(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(prose lines with inline code removed, code: fenced lines and inline code spans), each with line number.

    Links are looked for in prose only (a link inside a code sample is an example, not a link);
    `make` commands in code only (prose says "make sure", a command is written as code).
    """
    prose: list[tuple[int, str]] = []
    code: list[tuple[int, str]] = []
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            code.append((number, line))
            continue
        code.extend((number, m.group(2)) for m in INLINE_CODE.finditer(line))
        prose.append((number, INLINE_CODE.sub("", line)))
    return prose, code


def link_targets(text: str) -> list[tuple[int, str]]:
    prose, _ = split_code(text)
    found = []
    for number, line in prose:
        hits = [(m.start(), m.group(1)) for pattern in (LINK, REF_LINK, HTML_SRC) for m in pattern.finditer(line)]
        found.extend((number, target) for _, target in sorted(hits))
    return found


def make_targets_named(text: str) -> list[tuple[int, str]]:
    """Each target of each `make ...` command in the file's code, skipping VAR=value and -options."""
    _, code = split_code(text)
    named = []
    for number, snippet in code:
        snippet = PLACEHOLDER.sub("X", snippet)  # DATASETS=<folder with eg1800/> is one value
        for m in MAKE.finditer(snippet):
            for word in m.group(1).split():
                if "=" in word or word.startswith("-"):
                    continue
                if not re.fullmatch(r"[A-Za-z0-9_.-]+", word):
                    break
                named.append((number, word))
    return named


@cache
def makefile_targets() -> frozenset[str]:
    targets: set[str] = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        if line.startswith(("\t", "#")) or "$" in line.split(":", 1)[0]:
            continue
        m = TARGET_LINE.match(line)
        if m:
            targets.update(m.group(1).split())
    return frozenset(t for t in targets if not t.startswith("."))


def test_the_checks_find_what_they_look_for() -> None:
    """The parsers on a known sample, so a regex that silently matches nothing cannot pass the real checks."""
    sample = (
        "See [the API](docs/API.md#errors) and ![dialog](images/d.png \"Dialog\").\n"
        "Run `make serve CHECKPOINT=<your run> stop` or `make stop && make -j2 test`; make sure it works.\n"
        "```bash\nmake quality DATASETS=/data   # [not a link](nowhere.md)\n"
        "training/ship.py (make a run the model)\n```\n"
        "[ref]: ../LICENSE\n<img src=\"images/a.png\" width=200> [web](https://example.org) [top](#top)\n"
    )
    assert [t for _, t in link_targets(sample)] == [
        "docs/API.md#errors", "images/d.png", "../LICENSE", "images/a.png", "https://example.org", "#top",
    ]
    assert [t for _, t in make_targets_named(sample)] == ["serve", "stop", "stop", "test", "quality"]
    assert {"serve", "test", "stop", "setup"} <= makefile_targets()
    assert HISTORY.search("trained in Session 18") and HISTORY.search("see issues 3 and 4")
    assert not HISTORY.search("the session fixture") and not HISTORY.search("no issue, 3 files")


def test_every_relative_link_and_image_resolves() -> None:
    broken = []
    for path in markdown_files():
        text = text_of(path)
        if text is None:
            continue
        for number, target in link_targets(text):
            if EXTERNAL.match(target):
                continue
            relative = target.split("#", 1)[0].split("?", 1)[0]
            if not relative:
                continue
            resolved = (REPO / path).parent / relative
            if not resolved.exists():
                broken.append(f"{path}:{number}: {target}")
    assert not broken, "links or images that point at nothing:\n" + "\n".join(broken)


def test_every_make_target_the_docs_name_exists() -> None:
    targets = makefile_targets()
    missing = []
    for path in markdown_files():
        text = text_of(path)
        if text is None:
            continue
        missing.extend(f"{path}:{n}: make {t}" for n, t in make_targets_named(text) if t not in targets)
    assert not missing, f"make targets named in the docs but not in the Makefile ({sorted(targets)}):\n" + "\n".join(
        missing
    )


def offending_lines(predicate) -> list[str]:
    """'path:line: text' for each line of a project file outside tests/ that ``predicate`` flags."""
    hits = []
    for path in project_files():
        if path.startswith("tests/"):
            continue
        text = text_of(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if predicate(line):
                hits.append(f"{path}:{number}: {line.strip()[:120]}")
    return hits


def test_no_file_speaks_of_sessions_or_issues() -> None:
    """Releases are named by version and date (CHANGELOG.md), research by date and model version."""
    hits = offending_lines(HISTORY.search)
    assert not hits, f"{len(hits)} lines name a session or an issue:\n" + "\n".join(hits)


def test_nothing_names_the_build_machines_data_folder() -> None:
    """Users have no ../shared; examples say "any photo with a person" or a folder of their own."""
    hits = offending_lines(lambda line: SHARED in line)
    assert not hits, f"{len(hits)} lines name {SHARED}:\n" + "\n".join(hits)


@pytest.mark.parametrize(("path", "limit"), [("README.md", README_LIMIT), ("docs/MODEL_CARD.md", MODEL_CARD_LIMIT)])
def test_page_size(path: str, limit: int) -> None:
    size = len((REPO / path).read_text(encoding="utf-8"))
    assert size <= limit, f"{path} has {size:,} characters; at most {limit:,}"
