"""Every relative link in README.md and docs/*.md points at a file of the repository, and every
``#anchor`` at a heading of the file it names (GitHub's heading slugs)."""
from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_BLOCK = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces → '-'."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache  # a document's headings, read once however many links point into it
def anchors(document: Path) -> frozenset[str]:
    text = CODE_BLOCK.sub("", document.read_text())
    return frozenset(slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line))


def links(document: Path) -> list[str]:
    return [target for target in LINK.findall(CODE_BLOCK.sub("", document.read_text()))
            if not re.match(r"[a-z]+:", target)]  # http(s):, mailto: … are not ours to check


def test_slug_follows_github():
    assert slug("Timings of the two commands") == "timings-of-the-two-commands"
    assert slug("At 64×64") == "at-6464"
    assert slug("Reproducing the study: `betavae study`") == "reproducing-the-study-betavae-study"
    assert slug("Samplers, conditional sampling, fidelity and diversity, interpolation") == \
        "samplers-conditional-sampling-fidelity-and-diversity-interpolation"


def broken_links(document: Path) -> list[str]:
    """The relative links of ``document`` whose file or heading does not exist, with why."""
    broken = []
    for target in links(document):
        path, _, anchor = target.partition("#")
        file = (document.parent / path).resolve() if path else document
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with anchor #{anchor} in {file.name}")
    return broken


def test_broken_links_are_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n[ok](other.md#a-section) [self](#page) [web](https://example.org/x.md)\n"
                    "[no file](missing.md) [no heading](other.md#b-section) [no anchor](#nowhere)\n"
                    "```\n[in code](ignored.md)\n```\n")
    assert [entry.split(":")[0] for entry in broken_links(page)] == [
        "missing.md", "other.md#b-section", "#nowhere"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_relative_links_resolve(document):
    assert not (broken := broken_links(document)), "\n".join(broken)
