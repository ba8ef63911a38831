"""The prep entry points set polars' allocator options before polars loads, and respect the user's."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = (
    "import os, runpy, sys; sys.argv = ['movielens.py', '--help']\n"
    "try:\n    runpy.run_path({script!r}, run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    "print('CONF=' + os.environ.get('_RJEM_MALLOC_CONF', ''))\n"
)


def _conf_seen_by(script: Path, env: dict) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(script=str(script))],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    return [line for line in out.splitlines() if line.startswith("CONF=")][-1][len("CONF=") :]


def test_data_prep_scripts_keep_freed_pages():
    from llm4rec.data.allocator import KEEP_PAGES

    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    for script in sorted((REPO / "data_prep").glob("*.py")):
        # polars prepends its own defaults and appends ours, so ours (later options win) must come last
        assert _conf_seen_by(script, env).endswith(KEEP_PAGES), script.name


def test_user_jemalloc_options_win():
    env = {**os.environ, "_RJEM_MALLOC_CONF": "narenas:1"}
    conf = _conf_seen_by(REPO / "data_prep" / "movielens.py", env)
    assert conf.endswith("narenas:1") and "decay_ms:-1" not in conf


def test_no_change_once_polars_is_loaded(monkeypatch):
    import polars  # noqa: F401

    from llm4rec.data.allocator import keep_freed_pages

    monkeypatch.delenv("_RJEM_MALLOC_CONF", raising=False)
    assert keep_freed_pages() is False
    assert "_RJEM_MALLOC_CONF" not in os.environ


def test_llm4rec_prep_command_keeps_freed_pages():
    from llm4rec.data.allocator import KEEP_PAGES

    code = (
        "import os\nfrom llm4rec.cli import main\n"
        "try:\n    main(['prep', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('CONF=' + os.environ.get('_RJEM_MALLOC_CONF', ''))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1].endswith(KEEP_PAGES)


def test_polars_default_inherited_from_a_parent_is_not_a_user_choice():
    """A parent that imported polars passes polars' own default down; the child still tunes."""
    from llm4rec.data.allocator import KEEP_PAGES, POLARS_DEFAULT

    env = {**os.environ, "_RJEM_MALLOC_CONF": POLARS_DEFAULT}
    assert _conf_seen_by(REPO / "data_prep" / "movielens.py", env).endswith(KEEP_PAGES)
