"""The project speaks only of itself: no tracked text tells how or when it was developed.

Code, docs and tests describe llm4rec, and quote a figure as what was measured, on what hardware, when and
with which command. What they must not carry is the story of the work: numbered working sessions, the
tracker's task or issue numbers, who lent which machine, "earlier measurements", helpers and engineers, paths
of the machines the work happened on. :data:`PATTERNS` names each such wording; references to other projects'
trackers ("TALLRec issues #19", "LLaMA-Factory #5000", "huggingface/peft#2211") are fine.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: (name, pattern): each matches wording about how or when the project was developed. Case-insensitive.
PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (name, re.compile(rx, re.IGNORECASE))
    for name, rx in [
        ("a numbered working session", r"\bsessions?[ -]\d+"),
        (
            "a working session",
            r"\b(?:this|that|previous|earlier|last|next|same|working|helper)[ -]sessions?\b",
        ),
        ("the tracker's issue", r"\bissue's\b|\(issue[:)]|[#-]issue-\d+\b"),
        ("a machine lent", r"\b(?:was|were|been|being|is|are|be|got|get|gets) lent\b|\blent (?:us|to us)\b"),
        ("a helper doing the work", r"\bhelpers? (?:sessions?|engineers?|agents?)\b"),
        (
            "a helper doing the work",
            r"\b(?:a|the|another|other|by|from) helpers? (?:ran|measured|found|wrote|did|added|reported|tried)\b",
        ),
        (
            "other engineers",
            r"\b(?:other|another|fellow) engineers?\b|\bthe lead (?:engineer|merges?|will)\b",
        ),
        ("an earlier measurement", r"\b(?:earlier|previous) measurements?\b"),
        ("the working period", r"\b(?:development|working) (?:machine|period|session|day)s?\b"),
        (
            "the working tree layout",
            r"\bworktrees?\b|/work/(?:wt|main|notes|shared|models)\b|\.\./shared/device\b",
        ),
        ("the brief", r"\b(?:the|this|my|our) brief\b"),
    ]
]

#: ``task #3`` / ``issue #13`` / ``(#13`` point at the project's own tracker unless a project name comes
#: first ("TALLRec issues #19"): the word before must name another project (a capital or a slash in it)
TRACKER = re.compile(
    r"(?:(?P<before>[^\s(]+)\s+)?(?:tasks?|issues?|tickets?)\s*#\s*\d+|\(#\d+", re.IGNORECASE
)
#: words that start a sentence or a phrase, not project names
NOT_A_PROJECT = {
    "the",
    "this",
    "that",
    "see",
    "in",
    "per",
    "from",
    "our",
    "its",
    "an",
    "a",
    "by",
    "for",
    "of",
}


def _names_another_project(word: str | None) -> bool:
    if not word or word[-1] in ",.;:)":  # "on an H200, issue #13": punctuation ends the phrase before
        return False
    word = word.strip("'\"`*[]")
    return word.lower() not in NOT_A_PROJECT and (any(c.isupper() for c in word) or "/" in word)


def findings(text: str) -> list[tuple[int, str, str]]:
    """(line number, what, the line) for every line of ``text`` that speaks of how it was developed."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for name, pattern in PATTERNS:
            if pattern.search(line):
                found.append((number, name, line.strip()))
        for m in TRACKER.finditer(line):
            if m.group(0).startswith("(#") or not _names_another_project(m.group("before")):
                found.append((number, "the project's own tracker number", line.strip()))
    return found


def tracked_text_files() -> list[Path]:
    """Every file git tracks (or would add) that decodes as UTF-8 text, except this test's own examples."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    files = []
    for name in out.decode().split("\0"):
        path = REPO / name
        if not name or path == Path(__file__).resolve() or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        files.append(path)
    return files


def test_no_tracked_file_tells_how_it_was_developed():
    files = tracked_text_files()
    assert any(p.name == "README.md" for p in files) and len(files) > 50  # the scan sees the tree
    problems = [
        f"{path.relative_to(REPO)}:{number}: {what}: {line[:160]}"
        for path in files
        for number, what, line in findings(path.read_text(encoding="utf-8"))
    ]
    assert not problems, "wording about how the project was developed:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "text",
    [
        "Measured on this {s}'s 2-core machine.",
        "the data-prep rows in {s} 2 with nothing else running",
        "## Training speed and memory on a GPU (issue #13)",
        "reserves far more than it uses (2.2x on an H200, issue #13)",
        "The {i}'s check: K=20 ranking prompts",
        "as task #7 asked, the table has a column per seed",
        "packed batches (#13 item 4)",
        "no device {lent} in {s} 5",
        "one H200 {lent} for a few minutes in total",
        "Earlier measurements (previous {s}, loaded machine)",
        "All on the 2-core CPU development machine.",
        "a helper session measured it on the GPU",
        "by ../shared/device/run_gpu.sh",
        "see /work/wt/docs/README.md",
        "Not done: no GPU this {s}.",
        "issue's table (7 configurations) is within 4.5%",
        "see [the GPU table](#training-speed-and-memory-on-a-gpu-issue-13)",
    ],
)
def test_planted_wording_is_found(text):
    # the planted words are assembled here so that this file does not itself hold the wording it forbids
    text = text.format(s="ses" + "sion", i="is" + "sue", lent="was" + " lent")
    assert findings("an ordinary first line\n" + text), text
    assert findings("an ordinary first line\n" + text)[0][0] == 2


@pytest.mark.parametrize(
    "text",
    [
        "TALLRec issues #19 and #21 report the same AUC gap",
        "see LLaMA-Factory #5000 for the template",
        "huggingface/peft issue #2211 describes the bug",
        '@pytest.fixture(scope="session")',
        "A tiny random LLaMA (built once per session).",
        "Report helpers: ROC points, tables, shard assignment.",
        "from ._helpers import add_lora, varied_examples",
        "# -------------------------------------------------- helpers",
        "Measured on one NVIDIA H200 on 2026-11-30: torch 2.11+cu130",
        "the lead item of the pool is the target",
        "the issue is that the cache must be reset",
        "One TALLRec Yes/No sample per candidate, built by the task's own builder.",
    ],
)
def test_legitimate_wording_is_not_flagged(text):
    assert findings(text) == []
