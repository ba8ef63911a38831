"""Data prep shows a progress bar on a terminal, and nothing at all under --quiet or in a pipe."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from tests.data.logs import random_events, write_ml100k

REPO = Path(__file__).resolve().parents[2]


def _stderr_on_a_terminal(args: list[str]) -> str:
    """Run data_prep/movielens.py with stderr on a pseudo-terminal; return what it wrote there."""
    leader, follower = pty.openpty()
    # a fresh pseudo-terminal is 0 columns wide, where tqdm draws an empty bar
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "data_prep" / "movielens.py"), *args],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        cwd=REPO,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the terminal closed: the child is done
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait() == 0
    os.close(leader)
    return b"".join(chunks).decode("utf-8", "replace")


def test_bar_on_a_terminal_and_silence_when_quiet(tmp_path):
    src = write_ml100k(tmp_path / "s", random_events(30, 40, seed=2), 40)
    shown = _stderr_on_a_terminal(["--src", str(src), "--out", str(tmp_path / "a")])
    assert "samples: 100%" in shown and "event" in shown
    quiet = _stderr_on_a_terminal(["--src", str(src), "--out", str(tmp_path / "b"), "--quiet"])
    assert quiet == ""
    # in a pipe (logs, CI) the bar stays off by itself
    piped = subprocess.run(
        [
            sys.executable,
            str(REPO / "data_prep" / "movielens.py"),
            "--src",
            str(src),
            "--out",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert "samples:" not in piped.stderr
    # the bar changes no output byte
    for name in ("train", "valid", "test"):
        a = (tmp_path / "a" / "tallrec" / f"{name}.jsonl").read_bytes()
        assert a == (tmp_path / "b" / "tallrec" / f"{name}.jsonl").read_bytes()
