"""The docs stay in their places: options.md is OPTIONS as generated, the README stays short, links resolve."""

import re
from pathlib import Path

import pytest

from batchscore.options_doc import render

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [REPO / "README.md", *DOCS]
README_MAX_BYTES = 15_000


def test_options_md_is_generated_from_options():
    """Regenerate with `make docs` after changing OPTIONS in src/batchscore/config.py."""
    written = (REPO / "docs" / "options.md").read_text(encoding="utf-8")
    assert written == render(), "docs/options.md is out of date: run `make docs`"


def test_readme_stays_short():
    size = (REPO / "README.md").stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size:,} bytes (at most {README_MAX_BYTES:,}): move detail to docs/"


def _without_code(text: str) -> str:
    """Markdown outside fenced blocks and inline code: a link or heading inside code is not one."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[*_`]|<[^>]+>", "", heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+?)\s*#*$", text, flags=re.M):
        slug = _slug(heading)
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(page: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", _without_code(page.read_text(encoding="utf-8")))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_files_and_headings(page):
    broken = []
    for link in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto:: not ours to check offline
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link} (no file {target.relative_to(REPO) if target.is_relative_to(REPO) else target})")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link} (no heading #{anchor} in {target.relative_to(REPO)})")
    assert not broken, f"{page.relative_to(REPO)}: broken links: {broken}"


def test_the_link_checker_sees_links_and_headings(tmp_path):
    """The checks above are not vacuous: a page's links are found and headings become GitHub's anchors."""
    page = tmp_path / "x.md"
    page.write_text(
        "# Exit codes and bad input\n\n## How a part is committed, per store\n\n## A single `.parquet` file\n\n"
        "## Notes\n\n## Notes\n\nSee [a](other.md#x) and `[not](code.md)`.\n\n```\n[no](fenced.md)\n```\n"
    )
    assert _anchors(page) == {
        "exit-codes-and-bad-input",
        "how-a-part-is-committed-per-store",
        "a-single-parquet-file",
        "notes",
        "notes-1",
    }
    assert _links(page) == ["other.md#x"]
    assert any(_links(p) for p in PAGES)
