"""`llm4rec COMMAND --help`: the right program name, no docstring markup, every option explained."""

from __future__ import annotations

import re

import pytest

from llm4rec.cli import COMMANDS, main, plain


def _help(capsys, *argv: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_plain_strips_markup():
    assert plain("``llm4rec evaluate``: see :mod:`llm4rec.eval` and :func:`~x.y`") == (
        "llm4rec evaluate: see llm4rec.eval and x.y"
    )


@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in ("prep", "recipe-doc")])
def test_help_has_no_markup_and_every_option_is_explained(capsys, command):
    text = _help(capsys, command)
    assert text.startswith(f"usage: llm4rec {command}")
    assert "``" not in text and ":mod:" not in text and ":func:" not in text
    # an option line without text after it (argparse puts help on the same or the next line)
    lines = text.splitlines()
    for k, line in enumerate(lines):
        m = re.match(r"^  (-[-\w]+)(?: [A-Z_]+| \{[^}]*\})?(?:, --[-\w]+(?: [A-Z_]+)?)?$", line)
        if m and m.group(1) not in ("-h",):
            nxt = lines[k + 1] if k + 1 < len(lines) else ""
            assert nxt.startswith(" " * 8) and nxt.strip() and not nxt.strip().startswith("-"), (
                command,
                line,
            )


@pytest.mark.parametrize("source", ["movielens", "amazon", "bookcrossing", "generic"])
def test_prep_help_names_the_llm4rec_command_and_states_defaults(capsys, source):
    text = _help(capsys, "prep", source)
    assert text.startswith(f"usage: llm4rec prep {source}")
    flat = " ".join(text.split())
    for flag in ("--encoding", "--skip-bad-lines"):
        assert flag in flat
    for flag in ("--threshold THRESHOLD", "--dedup {last,first,none}", "--order {time,file,shuffle}"):
        after = flat.split(f"  {flag} ")[-1] if f"  {flag} " in text else flat.split(flag)[-1]
        assert "(default" in after[:200], (flag, after[:200])
