"""Code and docs cite only documents the repository holds (the design and method notes live in docs/)."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# a Markdown file named in code, specs or docs: docs/x.md, x.md (beside the citing doc) or README.md
CITED = re.compile(r"(?<![\w/.-])((?:docs/)?[A-Za-z][\w-]*\.md)\b")
WRITTEN_BY_JOBS = {"pauc.md", "trials.md"}  # report files the evaluate and sweep jobs write, not documents


def _sources():
    for folder in ("platform", "bench", "jobs", "docs", "tests"):
        yield from (p for p in (REPO / folder).rglob("*") if p.suffix in {".py", ".md", ".yaml"} and p.is_file())
    yield REPO / "README.md"


def test_every_cited_document_exists_in_the_repository():
    missing = []
    for path in _sources():
        for name in CITED.findall(path.read_text(encoding="utf-8")):
            if name in WRITTEN_BY_JOBS or path == Path(__file__):
                continue
            candidates = [REPO / name, path.parent / name, REPO / "docs" / name]
            if not any(c.is_file() for c in candidates):
                missing.append(f"{path.relative_to(REPO)} cites {name}")
    assert missing == []


def test_the_design_notes_the_code_relies_on_are_in_docs():
    for name in ("architecture.md", "shards.md", "jobs.md", "method.md", "results.md"):
        assert (REPO / "docs" / name).is_file(), name
