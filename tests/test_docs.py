"""The docs inside the repository stay true to what cites them and to what they link.

* Every "§N" or "§N.M" in the package, the tests and the benchmarks names its page ("behaviour
  §2.1", "architecture §4"; later numbers in the same phrase, "§2.1, §10.1", belong to the same
  page) and a section of that page with that number exists (docs/behaviour.md,
  docs/architecture.md). Wordings that point outside the repository ("reference §", design.md)
  are refused.
* Every relative link in README.md and docs/*.md points to a file that exists, and a link to a
  heading (``page.md#anchor``) to a heading that exists.

Each check is a function that returns what it found wrong, with a self-test proving it can fail.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = {"behaviour": ROOT / "docs" / "behaviour.md", "architecture": ROOT / "docs" / "architecture.md"}
CITING = ("pyprocserv", "tests", "bench")
# "behaviour §2" or "docs/behaviour.md §2": the page a citation names.
PAGE = re.compile(r"\b(?:docs/)?(behaviour|architecture)(?:\.md)?\s+(?=§)")
SECTION = re.compile(r"§(\d+(?:\.\d+)?)")
# A page's name reaches the numbers that follow it up to this many characters away
# ("behaviour §2 (greeting, lifecycle, command messages) and the captures of §10.1").
REACH = 200
OUTSIDE = re.compile(r"reference §|reference section|design\.md|ecosystem §|\.\./shared/")
HEADING = re.compile(r"^(#{2,3}) (\d+(?:\.\d+)?)[. ]", re.MULTILINE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def sections(markdown: str) -> set[str]:
    """The numbers of a page's numbered headings: ``## 2. Title`` -> "2", ``### 2.1 Title`` -> "2.1"."""
    return {number for _, number in HEADING.findall(markdown)}


def bad_citations(text: str, pages: dict[str, set[str]], default: str | None = None) -> list[str]:
    """The citations in ``text`` that name no page, or a section their page does not have.

    ``default`` is the page a citation with no page named means (a page citing itself).
    """
    bad = [f"points outside the repository: {m.group(0)!r}" for m in OUTSIDE.finditer(text)]
    named = [(m.end(), m.group(1)) for m in PAGE.finditer(text)]
    for m in SECTION.finditer(text):
        page = next((name for end, name in reversed(named) if end <= m.start()), None)
        end = next((end for end, name in reversed(named) if end <= m.start()), -REACH - 1)
        if page is None or m.start() - end > REACH:
            page = default
        if page is None:
            bad.append(f"{m.group(0)} names no page (write 'behaviour {m.group(0)}' or 'architecture ...')")
        elif m.group(1) not in pages[page]:
            bad.append(f"{page} {m.group(0)}: no such section in docs/{page}.md")
    return bad


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    return {slug(line.lstrip("#")) for line in markdown.splitlines() if line.startswith("#")}


def broken_links(page: Path) -> list[str]:
    """The relative links of a Markdown page whose file (or heading) does not exist."""
    bad = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            bad.append(f"{page.name}: {target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            bad.append(f"{page.name}: {target} (no such heading)")
    return bad


def citing_files() -> list[Path]:
    return [path for top in CITING for path in sorted((ROOT / top).rglob("*.py"))]


def test_every_citation_names_a_section_that_exists() -> None:
    pages = {name: sections(path.read_text()) for name, path in DOCS.items()}
    bad = []
    for path in citing_files():
        if path.name == "test_docs.py":
            continue  # this module's self-tests cite wrong sections on purpose
        bad += [f"{path.relative_to(ROOT)}: {problem}" for problem in bad_citations(path.read_text(), pages)]
    assert not bad, "\n".join(bad)


def test_the_docs_cite_sections_that_exist() -> None:
    # A page's bare "§N" is its own section; "behaviour §N" in the README or a page is that page's.
    pages = {name: sections(path.read_text()) for name, path in DOCS.items()}
    bad = []
    for path in [ROOT / "README.md", *DOCS.values()]:
        own = path.stem if path.stem in DOCS else None
        bad += [f"{path.name}: {problem}" for problem in bad_citations(path.read_text(), pages, own)]
    assert not bad, "\n".join(bad)


def test_the_code_cites_the_docs_at_all() -> None:
    # An empty search would pass the test above: the citations are there to be checked.
    text = "".join(path.read_text() for path in citing_files())
    assert len(PAGE.findall(text)) >= 30


def test_every_relative_link_of_the_docs_resolves() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    bad = [problem for page in pages for problem in broken_links(page)]
    assert not bad, "\n".join(bad)


# -- the checks can fail ---------------------------------------------------------------------

PAGES = {"behaviour": {"2", "2.1", "10.1"}, "architecture": {"3", "4"}}


def test_self_citation_check_accepts_cited_sections_and_lists() -> None:
    assert bad_citations("(behaviour §2.1, §10.1) and (docs/architecture.md §3, §4)", PAGES) == []


def test_self_citation_check_catches_a_missing_section() -> None:
    assert bad_citations("see behaviour §2.2", PAGES) == ["behaviour §2.2: no such section in docs/behaviour.md"]
    assert bad_citations("architecture §3, §7", PAGES) == ["architecture §7: no such section in docs/architecture.md"]


def test_self_citation_check_catches_a_citation_with_no_page() -> None:
    assert len(bad_citations("as §2.1 says", PAGES)) == 1
    assert len(bad_citations("behaviour §2" + " " * (REACH + 1) + "§2.1", PAGES)) == 1
    assert bad_citations("as §3 says", PAGES, default="architecture") == []
    assert len(bad_citations("as §9 says", PAGES, default="architecture")) == 1


def test_self_citation_check_catches_pages_outside_the_repository() -> None:
    assert bad_citations("(design.md §7)", PAGES)[0].startswith("points outside")
    assert bad_citations("(reference §2.1)", PAGES)[0].startswith("points outside")


def test_self_sections_reads_numbered_headings_only() -> None:
    assert sections("# Title\n## 0. Versions\n### 1.5 Keys\n## Notes\n### 10.2 ^X\n") == {"0", "1.5", "10.2"}


def test_self_link_check_catches_a_missing_file_and_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n## 1. Layers\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md) [ok](other.md#1-layers) [web](https://example.org/x) [self](#top)\n"
                    "# Top\n[gone](missing.md) [no heading](other.md#2-nothing)\n")
    assert broken_links(page) == ["page.md: missing.md (no such file)", "page.md: other.md#2-nothing (no such heading)"]
