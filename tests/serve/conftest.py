"""Shared serving fixtures: a small prepared catalogue (synthetic log), an adapter trained on it, a server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, write_adapter


def prep_synthetic(root: Path, seed: int = 0) -> Path:
    """A `llm4rec prep` output (TALLRec task, leave-one-out, 5-item histories) of a small synthetic log."""
    from llm4rec.data.prep import main
    from llm4rec.data.synthetic import SynthConfig, generate

    generate(root / "log", SynthConfig(users=24, items=40, corpus_users=1, seed=seed))
    out = root / "data"
    main(["--src", str(root / "log"), "--out", str(out), "--history", "5", "--quiet"], source="movielens")
    return out


@pytest.fixture(scope="session")
def catalog_dir(tmp_path_factory) -> Path:
    """The catalogue every serving test recommends from."""
    return prep_synthetic(tmp_path_factory.mktemp("serve-data"))


@pytest.fixture(scope="session")
def serve_adapter(tiny_llama, catalog_dir, tmp_path_factory) -> Path:
    """An adapter whose recipe names the catalogue's train split as its training data."""
    out = tmp_path_factory.mktemp("serve-ckpt") / "adapter"
    return write_adapter(tiny_llama, out, train=str(catalog_dir / "tallrec" / "train.jsonl"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `llm4rec serve` subprocess on a free 127.0.0.1 port."""

    def __init__(self, checkpoint: Path, catalog: Path, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "llm4rec.cli", "serve", "--checkpoint", str(checkpoint)]
        cmd += ["--catalog", str(catalog), "--port", str(self.port), *flags]
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError("server did not answer /healthz within 120 s")

    def stop(self) -> tuple[int, str]:
        """SIGTERM, then wait (kill after 30 s); the exit status and stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode, self.proc.stderr.read()


@pytest.fixture(scope="module")
def server(serve_adapter, catalog_dir) -> Iterator[Server]:
    """A batching server with small limits (4 KiB bodies, 30 candidates), always stopped."""
    srv = Server(serve_adapter, catalog_dir, "--max-body-bytes", "4096", "--max-candidates", "30")
    try:
        yield srv
    finally:
        srv.stop()
