"""Every repository path that code, units, scripts and examples cite exists in the repository.

A comment that says "see docs/design.md §5" is only worth something while that file is there; one
that points at a document outside the repository (the design notes the project started from) is
worth nothing to a reader of a clone. Paths of other projects are allowed when their repository
is named first (`NVIDIA/k8s-test-infra tests/e2e/...`), as the sources of captured values are.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_TOP = "agent|verifier|attest|tests|packaging|systemd|scripts|benchmarks|examples|proto|docs"
#: a repository-relative path, a bare README.md, or a document name that has no file here
_CITED = re.compile(
    rf"(?<![\w/.$<>{{-])((?:{_TOP})/[\w./-]*\w|README\.md|DESIGN(?:\.md)?\b|protocol\.md)"
)
#: "owner/repo " just before a path: a citation of another project's file
_OTHER_REPO = re.compile(r"[\w.-]+/[\w.-]+(?:\.git)? $")
_OUTSIDE = re.compile(r"\.\./shared|/work/shared|shared/reference")
_SOURCES = re.compile(r"\.(py|pyi|sh|toml|service|in|c|conf|sql|proto|cfg)$|(^|/)Makefile$|^\.ci/")


def _source_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    this = Path(__file__).relative_to(ROOT).as_posix()  # its own examples are not citations
    return [
        f for f in listed if _SOURCES.search(f) and not f.startswith("attest/v1/") and f != this
    ]


def _broken_citations(relative: str) -> list[str]:
    path = ROOT / relative
    if not path.is_file():  # deleted in the work tree but still in the index
        return []
    broken = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if _OUTSIDE.search(line):
            broken.append(f"{relative}:{number}: cites a document outside the repository")
        for match in _CITED.finditer(line):
            cited = match.group(1).rstrip(".")
            if _OTHER_REPO.search(line[: match.start()]):
                continue
            if not (ROOT / cited).exists():
                broken.append(f"{relative}:{number}: {cited} does not exist")
    return broken


def test_every_cited_path_exists() -> None:
    broken = [line for f in _source_files() for line in _broken_citations(f)]
    assert broken == [], "\n".join(broken)


def test_the_check_finds_a_missing_path(tmp_path: Path) -> None:
    text = '"""See docs/nowhere.md §2 and DESIGN §5; NVIDIA/x tests/e2e/a.xml is fine."""\n'
    found = [m.group(1) for m in _CITED.finditer(text)]
    assert found == ["docs/nowhere.md", "DESIGN", "tests/e2e/a.xml"]
    assert _OTHER_REPO.search(text[: text.index("tests/e2e")])
    assert not _OTHER_REPO.search(text[: text.index("docs/")])
