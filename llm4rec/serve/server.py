"""``llm4rec serve``: the recommendation API over HTTP (Starlette on uvicorn), the model loaded once.

    llm4rec serve --checkpoint runs/a --catalog data/ml100k [--host 127.0.0.1] [--port 8000]

Binds 127.0.0.1 unless ``--host`` says otherwise. Concurrent requests are batched into shared forward
passes (``--max-wait-ms``; ``--no-batching`` scores one request at a time). SIGTERM or Ctrl-C finish the
requests in flight and stop.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from llm4rec.cli import plain
from llm4rec.errors import UserError, exit_on_user_error
from llm4rec.serve.app import Limits

DEFAULT_LIMITS = Limits()


def build_parser() -> argparse.ArgumentParser:
    """The ``llm4rec serve`` argument parser."""
    ap = argparse.ArgumentParser(
        prog="llm4rec serve",
        description=plain(__doc__.split("\n\n")[0]),
        formatter_class=argparse.RawTextHelpFormatter,
    )
    ap.add_argument("--checkpoint", required=True, type=Path, help="adapter or model directory")
    ap.add_argument("--catalog", required=True, type=Path, help="a `llm4rec prep` output directory")
    ap.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    ap.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    ap.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests (default 5)"
    )
    ap.add_argument("--no-batching", action="store_true", help="score one request at a time")
    ap.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_LIMITS.max_body_bytes, help="request body limit"
    )
    ap.add_argument("--max-history", type=int, default=DEFAULT_LIMITS.max_history, help="history items limit")
    ap.add_argument(
        "--max-candidates",
        type=int,
        default=DEFAULT_LIMITS.max_candidates,
        help="candidates per request limit",
    )
    return ap


def _check_port(host: str, port: int) -> None:
    """Fail with one line before loading anything when the address cannot be bound."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port: must be in 0..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"--host: cannot resolve {host!r} ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise UserError(f"--port: cannot bind {host}:{port} ({exc.strerror})") from None


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``llm4rec serve``."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    for name in ("max_body_bytes", "max_history", "max_candidates"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')}: must be positive, got {getattr(args, name)}")
    if args.max_wait_ms < 0:
        raise UserError(f"--max-wait-ms: must be >= 0, got {args.max_wait_ms}")
    _check_port(args.host, args.port)

    import uvicorn

    from llm4rec.serve.app import create_app
    from llm4rec.serve.batching import Batcher
    from llm4rec.serve.catalog import Catalog
    from llm4rec.serve.model import LoadedModel, read_info
    from llm4rec.serve.recommend import check_compatible

    info = read_info(args.checkpoint)
    catalog = Catalog.load(args.catalog)
    check_compatible(info, catalog)
    model = LoadedModel(info)
    batcher = Batcher(model, enabled=not args.no_batching, max_wait_s=args.max_wait_ms / 1000)
    limits = Limits(args.max_body_bytes, args.max_history, args.max_candidates, DEFAULT_LIMITS.max_k)
    app = create_app(info, catalog, batcher, limits)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    print(
        f"llm4rec serve: http://{args.host}:{args.port} ({info.path} on {catalog.n_items} items, "
        f"batching {'off' if args.no_batching else f'on, {args.max_wait_ms:g} ms'})",
        flush=True,
    )
    # uvicorn answers SIGTERM/SIGINT by finishing the requests in flight, then re-raises the signal to the
    # handler it found: a no-op one here, so the command ends normally with status 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        server.run()
    finally:
        batcher.close()
    print("llm4rec serve: stopped", file=sys.stderr, flush=True)
    return 0
