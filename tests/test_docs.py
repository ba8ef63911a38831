"""The docs are checked, so they cannot drift from the code.

For README.md and every docs/*.md page:

* every command in a fenced shell block (``bash``, ``sh``, ``shell``, ``console``) that runs llm4rec
  (``llm4rec SUB``, ``python data_prep/X.py``, ``python scripts/X.py``, ``python -m MODULE``,
  ``accelerate launch [...] train.py RECIPE key=value`` or ``-m MODULE``, ``make TARGET``) names a command
  that exists, and every ``--flag`` it passes is one that command's parser knows; every ``key=value`` given to
  ``train.py`` is a key of the typed recipe;
* every relative link and ``#anchor`` resolves (GitHub's heading slugs);
* every repository path named in backquotes (``llm4rec/eval/scoring.py``, ``recipes/x.yaml``) exists.

Parsers are read from ``--help`` run in subprocesses (the docs test the commands as a user runs them, whatever
module now builds the parser), in parallel threads, cached across runs in pytest's cache keyed by the sources.
Placeholders are skipped where they stand for a value: upper-case words (``RECIPE``, ``DIR``), ``...`` and
``<name>`` / ``{a,b}`` forms; the flags around them are still checked.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
#: top-level directories and files of the repository: a backquoted path starting with one is checked
REPO_DIRS = ("llm4rec/", "tests/", "scripts/", "data_prep/", "recipes/", "docs/", ".ci/")
REPO_FILES = {"train.py", "Makefile", "constraints.txt", "pyproject.toml", "Dockerfile", "README.md"}
#: operators that separate commands on one shell line
SHELL_OPERATORS = {"&&", "||", ";", "|"}
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*(?:[./-].*)?|.*\.\.\..*|.*[<>*].*|.*/[A-Z][A-Z0-9_]*(?:[./].*)?")
#: ``section.key`` of a ``section.key=value`` recipe override (train.py, llm4rec plan)
RECIPE_OVERRIDE = re.compile(r"[a-z_]+(?:\.[a-z_]+)+")
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)")


def doc_files() -> list[Path]:
    """README.md and every page under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def is_placeholder(token: str) -> bool:
    """``RECIPE``, ``DIR/ranking``, ``FILE.gguf``, ``...``, ``<family>``: a stand-in for a value."""
    return bool(PLACEHOLDER.fullmatch(token))


# ----------------------------------------------------------------------------------------- markdown


@dataclass
class Page:
    """A markdown page split into fenced blocks and the prose lines around them."""

    path: Path
    blocks: list[tuple[str, int, list[str]]] = field(default_factory=list)  # (lang, first line no., lines)
    prose: list[tuple[int, str]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path, text: str | None = None) -> Page:
        page = cls(path)
        fence: str | None = None
        lang, start, body = "", 0, []
        lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
        for number, line in enumerate(lines, 1):
            stripped = line.strip()
            if fence is None:
                m = re.match(r"(`{3,}|~{3,})\s*([\w+-]*)", stripped)
                if m:
                    fence, lang, start, body = m.group(1), m.group(2).lower(), number + 1, []
                else:
                    page.prose.append((number, line))
            elif stripped.startswith(fence) and not stripped.strip(fence[0]):
                page.blocks.append((lang, start, body))
                fence = None
            else:
                body.append(line)
        return page

    def where(self, number: int) -> str:
        return f"{self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path}:{number}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces -> hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Page) -> set[str]:
    """Every heading anchor of a page, duplicates numbered as GitHub numbers them (x, x-1, x-2)."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in page.prose:
        m = re.match(r"(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def _without_code_spans(line: str) -> str:
    return re.sub(r"`[^`]*`", "", line)


def link_problems(page: Page) -> list[str]:
    """Relative links whose file does not exist, and #anchors no heading of the target page has."""
    problems = []
    for number, line in page.prose:
        for m in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _without_code_spans(line)):
            target = m.group(1)
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            if not path_part:
                if anchor not in anchors(page):
                    problems.append(
                        f"{page.where(number)}: link to {target!r}: no heading has the anchor #{anchor}"
                    )
                continue
            dest = (page.path.parent / path_part).resolve()
            if not dest.exists():
                problems.append(f"{page.where(number)}: link to {target!r}: {path_part} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(Page.read(dest)):
                problems.append(
                    f"{page.where(number)}: link to {target!r}: no heading has the anchor #{anchor}"
                )
    return problems


def _expand_braces(path: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [
        x
        for part in m.group(1).split(",")
        for x in _expand_braces(path[: m.start()] + part + path[m.end() :])
    ]


def repo_path_of(token: str) -> str | None:
    """The repository path a backquoted span or a command's argument names, or None."""
    token = token.split(":")[0].rstrip(",.;)").lstrip("(")
    if token.startswith("./"):
        token = token[2:]
    if token in REPO_FILES or token.startswith(REPO_DIRS):
        return None if is_placeholder(token) or "<" in token else token
    if re.fullmatch(r"[\w.-]*_[\w.-]*\.yaml", token):  # a shipped recipe named without its directory
        return "recipes/" + token
    return None


def path_problems(page: Page) -> list[str]:
    """Backquoted repository paths (and paths in shell commands) that do not exist."""
    named: list[tuple[int, str]] = []
    for number, line in page.prose:
        for span in re.findall(r"`([^`\n]+)`", line):
            words = span.split()
            if words:
                named.append((number, words[0]))
    for number, argv in shell_commands(page):
        named += [(number, token) for token in argv]
    problems = []
    for number, token in named:
        path = repo_path_of(token)
        for candidate in _expand_braces(path) if path else []:
            if not (REPO / candidate.rstrip("/")).exists():
                problems.append(f"{page.where(number)}: `{candidate}` does not exist in the repository")
    return problems


# -------------------------------------------------------------------------------------- shell blocks


def shell_commands(page: Page) -> Iterator[tuple[int, list[str]]]:
    """(line number, argv) of every command in the page's shell blocks; comments and prompts removed."""
    for lang, start, body in page.blocks:
        if lang not in SHELL_LANGS:
            continue
        logical: list[tuple[int, str]] = []
        for offset, line in enumerate(body):
            if logical and logical[-1][1].endswith("\\"):
                logical[-1] = (logical[-1][0], logical[-1][1][:-1] + " " + line)
            else:
                logical.append((start + offset, line))
        for number, line in logical:
            text = line.strip()
            if lang == "console" and not text.startswith("$ "):
                continue  # output
            text = text.removeprefix("$ ")
            try:
                tokens = shlex.split(text, comments=True)
            except ValueError as e:
                yield number, ["<unparsable>", str(e)]
                continue
            argv: list[str] = []
            for token in [*tokens, ";"]:
                if token in SHELL_OPERATORS:
                    if argv:
                        yield number, argv
                    argv = []
                else:
                    argv.append(token)


@dataclass
class Invocation:
    """What one documented command runs: the parser that checks it, and its arguments."""

    parser: tuple[str, ...] | None  # key of the --help to read; None: no parser to check
    args: list[str]
    recipe: str | None = None  # train.py's recipe argument
    make_targets: list[str] = field(default_factory=list)


def _python_target(argv: list[str]) -> Invocation | None:
    """``X.py args`` or ``-m MODULE args``: the script or module it runs."""
    if not argv:
        return None
    if argv[0] == "-m" and len(argv) > 1:
        # llm4rec's own modules; `python -m pip` or another project's module is not the docs' to check
        return Invocation(("module", argv[1]), argv[2:]) if argv[1].split(".")[0] == "llm4rec" else None
    script = argv[0].removeprefix("./")
    if script == "train.py":
        recipe = argv[1] if len(argv) > 1 else None
        return Invocation(None, argv[2:], recipe=recipe)
    # the repository's scripts (a misspelt one is reported by the path check); another project's are not
    if script.endswith(".py") and script.startswith(REPO_DIRS) and not is_placeholder(script):
        return Invocation(("script", script), argv[1:]) if (REPO / script).is_file() else None
    return None


def invocations(argv: list[str]) -> list[Invocation]:
    """The llm4rec commands one documented command line runs (none for other programs)."""
    while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):  # VAR=value prefixes
        argv = argv[1:]
    if not argv:
        return []
    head, rest = Path(argv[0]).name, argv[1:]
    if head == "llm4rec":
        if not rest or rest[0].startswith("-"):
            return [Invocation(("llm4rec",), rest)]
        if is_placeholder(rest[0]):
            return []
        if rest[0] == "prep" and len(rest) > 1 and not rest[1].startswith("-"):
            return [] if is_placeholder(rest[1]) else [Invocation(("llm4rec", "prep", rest[1]), rest[2:])]
        return [Invocation(("llm4rec", rest[0]), rest[1:])]
    if re.fullmatch(r"python(3(\.\d+)?)?", head):
        target = _python_target(rest)
        return [target] if target else []
    if head == "accelerate" and rest[:1] == ["launch"]:
        launcher = []
        i = 1
        while i < len(rest) and rest[i] != "-m" and not rest[i].endswith(".py"):
            launcher.append(rest[i])
            i += 1
        target = _python_target(rest[i:])
        return [Invocation(("accelerate-launch",), launcher), *([target] if target else [])]
    if head == "make" and not {"-C", "-f", "--directory", "--file"} & set(rest):  # another Makefile
        targets = [a for a in rest if not a.startswith("-") and "=" not in a]
        return [Invocation(None, [], make_targets=targets)]
    return []


def help_command(key: tuple[str, ...]) -> list[str]:
    """The command that prints the --help text (or the recipe keys) for a parser key."""
    py = sys.executable
    kind, *rest = key
    if kind == "llm4rec":
        return [py, "-m", "llm4rec.cli", *rest, "--help"]
    if kind == "script":
        return [py, rest[0], "--help"]
    if kind == "module":
        return [py, "-m", rest[0], "--help"]
    if kind == "accelerate-launch":
        return [py, "-m", "accelerate.commands.accelerate_cli", "launch", "--help"]
    if kind == "recipe-keys":
        return [py, "-m", "llm4rec.cli", "recipe-doc"]
    raise ValueError(key)


def _run_help(key: tuple[str, ...]) -> tuple[int, str]:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", PYTHON_COLORS="0", TERM="dumb")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    try:
        proc = subprocess.run(
            help_command(key), cwd=REPO, env=env, capture_output=True, text=True, timeout=180
        )
    except subprocess.TimeoutExpired:
        return 124, "timed out"
    return proc.returncode, proc.stdout + proc.stderr


def _sources_digest() -> str:
    """A digest of every source whose parsers the docs check: a change anywhere invalidates the cache."""
    h = hashlib.sha256(sys.executable.encode())
    for pattern in ("llm4rec/**/*.py", "scripts/*.py", "data_prep/*.py", "train.py", "pyproject.toml"):
        for path in sorted(REPO.glob(pattern)):
            h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


class HelpTexts:
    """--help outputs by parser key: computed in parallel threads once, kept in pytest's cache."""

    def __init__(self, cache=None) -> None:
        self.cache = cache
        self.cache_key = f"llm4rec/docs-help/{_sources_digest()}"
        stored = cache.get(self.cache_key, {}) if cache is not None else {}
        self.texts: dict[tuple[str, ...], tuple[int, str]] = {
            tuple(k.split("\0")): (rc, text) for k, (rc, text) in stored.items()
        }

    def fetch(self, keys: Iterable[tuple[str, ...]]) -> None:
        missing = sorted(set(keys) - set(self.texts))
        if not missing:
            return
        with ThreadPoolExecutor(max_workers=4) as pool:
            self.texts.update(zip(missing, pool.map(_run_help, missing), strict=True))
        if self.cache is not None:
            self.cache.set(self.cache_key, {"\0".join(k): list(v) for k, v in self.texts.items()})

    def flags(self, key: tuple[str, ...]) -> set[str]:
        _, text = self.texts[key]
        found = set(FLAG.findall(text))
        for name in re.findall(r"--\[no-\]([\w-]+)", text):
            found |= {f"--{name}", f"--no-{name}"}
        return found

    def recipe_keys(self) -> set[str]:
        _, text = self.texts[("recipe-keys",)]
        return {line.split()[0] for line in text.splitlines() if line.strip() and "." in line.split()[0]}


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return {
        t for m in re.finditer(r"^([\w./$()-][^:=#\n]*?)\s*:(?!=)", text, re.M) for t in m.group(1).split()
    }


def command_problems(pages: list[Page], helps: HelpTexts) -> list[str]:
    """Documented commands, flags, recipe keys and make targets that do not exist."""
    found = [
        (page, number, inv)
        for page in pages
        for number, argv in shell_commands(page)
        for inv in invocations(argv)
    ]
    helps.fetch([("recipe-keys",), *(inv.parser for _, _, inv in found if inv.parser)])
    recipe_keys = helps.recipe_keys()
    targets = makefile_targets()
    problems = []
    for page, number, inv in found:
        where = page.where(number)
        if inv.parser:
            rc, text = helps.texts[inv.parser]
            name = " ".join(inv.parser[1:]) or "llm4rec"
            if rc != 0:
                problems.append(f"{where}: `{name} --help` failed (exit {rc}): {text.strip()[-300:]}")
                continue
            known = helps.flags(inv.parser)
            for arg in inv.args:
                flag = arg.split("=", 1)[0]
                if (flag.startswith("--") or re.fullmatch(r"-[A-Za-z]", flag)) and flag not in known:
                    problems.append(f"{where}: {name} has no option {flag}")
        if inv.recipe is not None and not is_placeholder(inv.recipe) and not (REPO / inv.recipe).is_file():
            problems.append(f"{where}: recipe {inv.recipe} does not exist")
        for arg in inv.args if inv.recipe is not None or inv.parser else []:
            key = arg.split("=", 1)[0]
            if RECIPE_OVERRIDE.fullmatch(key) and "=" in arg and key not in recipe_keys:
                problems.append(f"{where}: {key!r} is not a recipe key (llm4rec recipe-doc lists them)")
        problems += [
            f"{where}: the Makefile has no target {t!r}" for t in inv.make_targets if t not in targets
        ]
    return problems


# --------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def helps(request) -> HelpTexts:
    return HelpTexts(getattr(request.config, "cache", None))  # None under -p no:cacheprovider


@pytest.fixture(scope="module")
def pages() -> list[Page]:
    return [Page.read(path) for path in doc_files()]


def test_the_docs_are_found(pages):
    names = {p.path.name for p in pages}
    assert {"README.md", "getting-started.md", "benchmarks.md"} <= names
    assert sum(1 for p in pages for _ in shell_commands(p)) > 30  # the shell blocks are read


def test_documented_commands_flags_and_recipe_keys_exist(pages, helps):
    problems = command_problems(pages, helps)
    assert not problems, "\n".join(problems)


def test_links_and_anchors_resolve(pages):
    problems = [p for page in pages for p in link_problems(page)]
    assert not problems, "\n".join(problems)


def test_named_repository_paths_exist(pages):
    problems = [p for page in pages for p in path_problems(page)]
    assert not problems, "\n".join(problems)


PLANTED = """# A page

## Set-up: two `commands`

```bash
llm4rec plan recipes/tallrec_ml1m.yaml --gpu-gbb 24 --arch DIR   # a misspelt flag
llm4rec evalute --checkpoint runs/a            # a misspelt subcommand
python train.py recipes/tallrec_ml1m.yaml train.lerning_rate=3e-4
python data_prep/movielens.py --src DIR --out OUT --task tallrec --presett tallrec
make demo-rael
python finetune_rec.py --base_model X --no-such-flag && python -m pip install --no-such-flag x
python scripts/bench_trian.py --quick && make -C llama.cpp quantize
llm4rec plan RECIPE --gpu-gb 24 ... && llm4rec COMMAND --help
llm4rec plan recipes/tallrec_ml1m.yaml lora.rank=16 lora.r=16
```

See [set-up](#set-up-two-commands), [missing](#no-such-heading), [a page](nowhere.md) and
[benchmarks](docs/benchmarks.md#no-such-table); the loop is in `llm4rec/train/loops.py`, the recipe
`tallrec_ml1m_gpt5.yaml`.
"""


def test_planted_mistakes_are_found(helps):
    """Only quick parsers here (no torch import), so this test costs little on a worker of its own."""
    path = REPO / "PLANTED.md"  # as if it were beside README.md, for relative links
    page = Page.read(path, PLANTED)
    commands = command_problems([page], helps)
    assert any("plan has no option --gpu-gbb" in p for p in commands), commands
    assert any("`evalute --help` failed" in p for p in commands), commands
    assert any("'train.lerning_rate' is not a recipe key" in p for p in commands), commands
    assert any("has no option --presett" in p for p in commands), commands
    assert any("no target 'demo-rael'" in p for p in commands), commands
    assert any("'lora.rank' is not a recipe key" in p for p in commands), commands
    assert len(commands) == 6, commands  # the placeholder line and the correct flags pass
    links = link_problems(page)
    assert len(links) == 3 and not any("#set-up-two-commands" in p for p in links), links
    paths = path_problems(page)
    assert {p.split("`")[1] for p in paths} == {
        "llm4rec/train/loops.py",
        "recipes/tallrec_ml1m_gpt5.yaml",
        "scripts/bench_trian.py",
    }


def test_slugs_follow_github():
    assert slug("2. The demo: `make demo`") == "2-the-demo-make-demo"
    assert slug("TALLRec's few-shot table at small scale") == "tallrecs-few-shot-table-at-small-scale"
    assert slug("GGUF files: `llm4rec import-gguf`") == "gguf-files-llm4rec-import-gguf"
    assert slug("Memory: will it fit?") == "memory-will-it-fit"
    page = Page.read(REPO / "x.md", "# A\n## Notes\n```text\n### Instruction:\n```\n## Notes\n")
    assert anchors(page) == {"a", "notes", "notes-1"}  # headings in a fenced block are not headings
