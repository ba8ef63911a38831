"""``llm4rec convert``: turn a remote-code checkpoint into classes transformers ships (no remote code run).

Each family module under :mod:`llm4rec.models.families` holds its converter; the registry entry names it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

from llm4rec.cli import plain
from llm4rec.errors import UserError, exit_on_user_error
from llm4rec.models.registry import BackboneFamily, get_family, list_families


def converter_for(family: BackboneFamily):
    """The ``convert(src, out, family)`` function registered for ``family``."""
    if family.converter is None:
        raise UserError(f"--family: {family.name!r} loads directly with transformers; nothing to convert")
    return family.converter


def cache_root() -> Path:
    """Where converted checkpoints are cached (``$LLM4REC_CACHE`` or ``~/.cache/llm4rec``)."""
    return Path(os.environ.get("LLM4REC_CACHE", Path.home() / ".cache" / "llm4rec")) / "converted"


def convert_cached(family: BackboneFamily, src: Path) -> Path:
    """Convert ``src`` once into the cache and reuse it while the source files are unchanged."""
    h = hashlib.sha256(str(src.resolve()).encode())
    for p in sorted(src.iterdir()):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    out = cache_root() / f"{family.name}-{h.hexdigest()[:16]}"
    if not (out / "config.json").is_file():
        print(f"converting {src} ({family.name}) into {out} (once)")
        converter_for(family)(src, out, family.name)
    return out


@exit_on_user_error
def main(argv: list[str]) -> int:
    """Command-line entry: ``llm4rec convert --family F --src ORIGINAL_DIR --out DIR``."""
    legacy = [f.name for f in list_families() if f.converter]
    ap = argparse.ArgumentParser(prog="llm4rec convert", description=plain(__doc__))
    ap.add_argument("--family", required=True, help=f"one of: {', '.join(legacy) or '(none registered)'}")
    ap.add_argument("--src", required=True, type=Path, help="original checkpoint directory")
    ap.add_argument("--out", required=True, type=Path, help="output directory (written atomically)")
    args = ap.parse_args(argv)
    if not args.src.is_dir():
        raise UserError(f"--src: {args.src} is not a directory")
    fam = get_family(args.family)
    out = converter_for(fam)(args.src, args.out, fam.name)
    print(f"converted {args.src} -> {out}")
    return 0
