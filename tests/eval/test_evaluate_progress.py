"""`llm4rec evaluate` shows a progress bar on a terminal by default; --no-progress and pipes stay quiet."""

from __future__ import annotations

import json
import sys

import pytest

from llm4rec.eval.evaluate import main
from tests.conftest import make_tallrec_samples


def _run(argv, capsys, tty: bool, monkeypatch) -> tuple[int, str]:
    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "tty", "bar"),
    [([], True, True), ([], False, False), (["--no-progress"], True, False), (["--progress"], False, True)],
)
def test_progress_bar_default_follows_the_terminal(
    tiny_llama, tmp_path, capsys, monkeypatch, flags, tty, bar
):
    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_tallrec_samples(6)), encoding="utf-8")
    argv = ["--checkpoint", str(tiny_llama), "--data", str(data), "--out", str(tmp_path / "r"), *flags]
    code, err = _run(argv, capsys, tty, monkeypatch)
    assert code == 0, err
    assert ("6/6" in err and "prompt" in err) is bar, err


def test_missing_checkpoint_says_the_directory_does_not_exist(tmp_path, capsys, monkeypatch):
    data = tmp_path / "t.jsonl"
    data.write_text(json.dumps(make_tallrec_samples(1)[0]) + "\n", encoding="utf-8")
    code, err = _run(
        ["--checkpoint", str(tmp_path / "nope"), "--data", str(data)], capsys, False, monkeypatch
    )
    assert code == 2
    assert f"{tmp_path / 'nope'} does not exist" in err and err.count("\n") == 1, err
