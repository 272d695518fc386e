"""The documentation resolves: every MATH citation and every README section the code points to."""

import re
from pathlib import Path

from conftest import REPO

SOURCES = [
    *REPO.glob("src/nemon/**/*.py"),
    *REPO.glob("benchmarks/**/*.py"),
    *REPO.glob("scripts/*.py"),
    *REPO.glob("tests/*.py"),
    *REPO.glob("workflow/**/*.*"),
    *REPO.glob("profiles/**/*.yaml"),
    REPO / "Snakefile",
    REPO / "config.yaml",
    REPO / "README.md",
    *(p for p in REPO.glob("docs/*.md") if p.name != "MATH.md"),  # MATH.md is what is cited
]


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_every_math_citation_names_a_section_of_docs_math():
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", text(REPO / "docs/MATH.md"), re.M)}
    assert sections == set(range(1, 18))
    cited = set()
    for path in SOURCES:
        for n in re.findall(r"\bMATH (\d+)\b", text(path)):
            assert int(n) in sections, f"{path} cites MATH {n}"
            cited.add(int(n))
    assert cited == sections, f"sections nobody cites: {sections - cited}"
    assert not any("reference/MATH.md" in text(p) for p in SOURCES if p.name != "test_docs.py")


def test_every_readme_section_the_code_points_to_exists():
    readme = text(REPO / "README.md")
    headings = set(re.findall(r"^#+ (.+?)\s*$", readme, re.M))
    leads = set(re.findall(r"^\*\*(.+?)\.\*\*", readme, re.M))  # bold paragraph leads
    names = {h.replace("`", "") for h in headings | leads}
    for path in SOURCES:
        for name in re.findall(r'README, ["]([^"]+)["]', text(path)):
            assert name in names, f"{path} points to README section {name!r}"


def test_every_docs_section_the_code_points_to_exists():
    """``docs/<file>.md, "<heading>"`` in the code names a heading of that file."""
    seen = 0
    for path in [*SOURCES, REPO / "docs" / "MATH.md"]:
        for doc, name in re.findall(r'(docs/[a-z]+\.md), ["]([^"]+)["]', text(path)):
            target = REPO / doc
            assert target.is_file(), f"{path} points to {doc}, which does not exist"
            headings = {
                h.replace("`", "") for h in re.findall(r"^#+ (.+?)\s*$", text(target), re.M)
            }
            assert name in headings, f"{path} points to {doc} section {name!r}"
            seen += 1
    assert seen >= 5  # the pattern matches what the code writes


def test_every_relative_link_of_the_docs_resolves():
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for link in re.findall(r"\]\(([^)\s#:]+)(?:#[^)]*)?\)", text(path)):
            assert (path.parent / link).exists(), f"{path.name} links to {link}, which is missing"
