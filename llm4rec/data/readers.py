"""Reading raw source files: fast columnar parsing, exact ``file:line`` diagnosis, hashes, gzip, encodings.

Every delimited reader follows one pattern. The fast path parses the whole file with polars' multi-threaded
CSV reader under a strict schema. If that fails (a bad value, a missing or extra field), a slow Python pass
walks the file line by line to name the first bad line exactly, or, under ``skip_bad_lines``, to parse the
good lines and count the bad ones. Well-formed files never pay for the slow pass.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import polars as pl

from llm4rec.errors import UserError

#: how a field of a delimited file is parsed: polars dtype -> Python converter used by the slow pass
_PY_PARSE: dict[Any, Callable[[str], Any]] = {
    pl.Int64: int,
    pl.Float64: float,
    pl.Utf8: str,
}
_KIND = {pl.Int64: "an integer", pl.Float64: "a number", pl.Utf8: "text"}


@dataclass
class ReadReport:
    """What reading the sources skipped, per file (``--skip-bad-lines``)."""

    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)

    def skip(self, path: Path, message: str) -> None:
        """Count one skipped line of ``path``; keep the first message as an example."""
        self.skipped[path.name] = self.skipped.get(path.name, 0) + 1
        self.examples.setdefault(path.name, message)

    def bad_line(self, path: Path, lineno: int, problem: str, skip: bool) -> None:
        """A malformed line: stop with ``file:line: problem``, or with ``skip`` (--skip-bad-lines) count it."""
        msg = f"{path.name}:{lineno}: {problem}"
        if not skip:
            raise UserError(f"{msg} (pass --skip-bad-lines to skip and count such lines)")
        self.skip(path, msg)

    @property
    def total(self) -> int:
        """Skipped lines over all files."""
        return sum(self.skipped.values())


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else a :class:`UserError` saying which file is missing."""
    if not path.is_file():
        parent = path.parent
        found = sorted(p.name for p in parent.iterdir())[:20] if parent.is_dir() else []
        hint = f" (found: {', '.join(found)})" if found else f" ({parent} does not exist)"
        raise UserError(f"{path}: no such file; expected the {what}{hint}")
    return path


def find_file(src: Path, names: list[str], what: str) -> Path:
    """The first of ``names`` (each also tried with ``.gz``) that exists in ``src``, else a UserError."""
    for name in names:
        for cand in (src / name, src / f"{name}.gz"):
            if cand.is_file():
                return cand
    found = sorted(p.name for p in src.iterdir())[:20] if src.is_dir() else []
    where = f"found: {', '.join(found)}" if found else f"{src} does not exist or is empty"
    raise UserError(f"{src}: no {what} ({' or '.join(names)}); {where}")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def is_gzip(path: Path) -> bool:
    """True if ``path`` starts with the gzip magic bytes (whatever its name)."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def open_bytes(path: Path) -> IO[bytes]:
    """Open a plain or gzip-compressed file for binary reading (decompressed on the fly)."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def check_codec(encoding: str, flag: str = "--encoding") -> str:
    """Return ``encoding`` if Python knows it, else a UserError naming the flag."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise UserError(f"{flag}: unknown text encoding {encoding!r} (try utf-8 or latin-1)") from None


def read_text(path: Path, encoding: str, flag: str = "--encoding") -> str:
    """Decode a whole (small) file; an encoding error names the file, the line and the flag to change."""
    data = open_bytes(path).read()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{path.name}:{line}: not valid {encoding} text ({exc.reason} at byte {exc.start}); "
            f"pass {flag} with the file's encoding, e.g. {flag} latin-1"
        ) from None


def iter_lines(path: Path, encoding: str, flag: str = "--encoding") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` without the line end, streaming (plain or gzip)."""
    with open_bytes(path) as raw:
        for lineno, bline in enumerate(raw, 1):
            try:
                line = bline.decode(encoding)
            except UnicodeDecodeError as exc:
                raise UserError(
                    f"{path.name}:{lineno}: not valid {encoding} text ({exc.reason}); pass {flag} with the "
                    f"file's encoding, e.g. {flag} latin-1"
                ) from None
            yield lineno, line.rstrip("\r\n")


def _describe(fields: list[str], schema: dict[str, Any], sep: str, names: list[str]) -> str | None:
    """Why a split line does not fit ``schema`` (None if it does)."""
    sep_name = {"\t": "tab", ",": "comma", ";": "semicolon", "::": "'::'", "|": "'|'"}.get(sep, repr(sep))
    if len(fields) != len(schema):
        return f"expected {len(schema)} {sep_name}-separated fields, got {len(fields)}"
    for name, dtype, value in zip(names, schema.values(), fields):
        if dtype is pl.Utf8:
            continue
        try:
            _PY_PARSE[dtype](value)
        except ValueError:
            return f"field {name!r} is {value!r}, expected {_KIND[dtype]}"
    return None


def read_delimited(
    path: Path,
    sep: str,
    schema: dict[str, Any],
    *,
    skip_bad_lines: bool,
    report: ReadReport,
    encoding: str = "utf-8",
) -> pl.DataFrame:
    """Parse a headerless delimited file of unquoted fields into ``schema``.

    ``sep`` may be several characters (``::``). Bad lines raise ``UserError('file:line: ...')`` unless
    ``skip_bad_lines``.
    """
    names = list(schema)
    utf8 = encoding.replace("-", "").lower() == "utf8"
    # polars decodes text as UTF-8 only: other encodings take the slow path when there are text fields
    if utf8 or pl.Utf8 not in schema.values():
        df = _fast_delimited(path, sep, schema)
        if df is not None:
            return df
    # slow path: exact diagnosis, or parse-and-skip
    rows: list[list[Any]] = []
    parsers = [_PY_PARSE[d] for d in schema.values()]
    for lineno, line in iter_lines(path, encoding):
        if not line.strip():
            continue
        fields = line.split(sep)
        problem = _describe(fields, schema, sep, names)
        if problem is not None:
            report.bad_line(path, lineno, problem, skip_bad_lines)
            continue
        rows.append([p(v) for p, v in zip(parsers, fields)])
    return pl.DataFrame(rows, schema=schema, orient="row")


def _fast_delimited(path: Path, sep: str, schema: dict[str, Any]) -> pl.DataFrame | None:
    """polars' parser under a strict schema; None if the file does not parse cleanly."""
    names = list(schema)
    if len(sep) == 1:
        read_schema = dict(schema)
        value_cols = names
        pad_cols: list[str] = []
    else:
        # polars separators are one byte: split on the separator's first character and require the
        # columns between two halves of the separator to be empty (e.g. '1::2' -> '1', '', '2')
        if len(set(sep)) != 1:
            return None
        read_schema, value_cols, pad_cols = {}, [], []
        for k, name in enumerate(names):
            if k:
                for j in range(len(sep) - 1):
                    pad = f"__pad{k}_{j}"
                    read_schema[pad] = pl.Utf8
                    pad_cols.append(pad)
            read_schema[name] = schema[name]
            value_cols.append(name)
    try:
        df = pl.read_csv(
            open_bytes(path) if is_gzip(path) else path,
            separator=sep[0],
            has_header=False,
            schema=read_schema,
            quote_char=None,
            encoding="utf8-lossy",
        )
    except (pl.exceptions.PolarsError, OSError, ValueError):
        return None
    if df.width != len(read_schema):
        return None
    if df.select(pl.any_horizontal(pl.col(value_cols).is_null()).any()).item():
        return None
    if pad_cols and df.select(pl.any_horizontal(pl.col(pad_cols).is_not_null()).any()).item():
        return None
    return df.select(value_cols)


def read_csv_table(
    path: Path,
    *,
    sep: str = ",",
    encoding: str = "utf-8",
    columns: dict[str, Any] | None = None,
    quote_char: str | None = '"',
    skip_bad_lines: bool,
    report: ReadReport,
) -> pl.DataFrame:
    """A CSV with a header row and quoted fields; ``columns`` (name -> dtype) must all be present.

    Other columns are read as text. A missing column names it and lists those found. Bad lines are
    located with Python's ``csv`` module (which follows the same quoting rules).
    """
    columns = columns or {}
    head = _header(path, sep, encoding, quote_char)
    missing = [c for c in columns if c not in head]
    if missing:
        raise UserError(
            f"{path.name}: missing column {missing[0]!r}; the header has: {', '.join(head) or '(nothing)'}"
        )
    overrides = {c: columns.get(c, pl.Utf8) for c in head}
    utf8 = encoding.replace("-", "").lower() == "utf8"
    # polars reads UTF-8 only: other encodings are transcoded in memory first (item files are small)
    source: Any = (
        (open_bytes(path) if is_gzip(path) else path)
        if utf8
        else io.BytesIO(read_text(path, encoding).encode("utf-8"))
    )
    try:
        df = pl.read_csv(source, separator=sep, schema=overrides, quote_char=quote_char, encoding="utf8")
        if (
            df.columns == head
            and not df.select(pl.any_horizontal(pl.col(list(columns)).is_null()).any()).item()
        ):
            return df
    except (pl.exceptions.PolarsError, OSError, ValueError):
        pass
    return _slow_csv(path, sep, encoding, quote_char, head, columns, skip_bad_lines, report)


def _header(path: Path, sep: str, encoding: str, quote_char: str | None) -> list[str]:
    import csv

    for _, line in iter_lines(path, encoding):
        reader = csv.reader([line], delimiter=sep, quotechar=quote_char or '"', quoting=_quoting(quote_char))
        return [h.strip() for h in next(reader)]
    raise UserError(f"{path}: the file is empty")


def _quoting(quote_char: str | None) -> int:
    import csv

    return csv.QUOTE_MINIMAL if quote_char else csv.QUOTE_NONE


def _slow_csv(
    path: Path,
    sep: str,
    encoding: str,
    quote_char: str | None,
    head: list[str],
    columns: dict[str, Any],
    skip_bad_lines: bool,
    report: ReadReport,
) -> pl.DataFrame:
    import csv

    with open_bytes(path) as raw:
        text = io.TextIOWrapper(raw, encoding=encoding, newline="")
        reader = csv.reader(text, delimiter=sep, quotechar=quote_char or '"', quoting=_quoting(quote_char))
        data: dict[str, list[Any]] = {c: [] for c in head}
        idx = {c: head.index(c) for c in head}
        parsers = {c: _PY_PARSE[columns.get(c, pl.Utf8)] for c in head}
        try:
            next(reader)
            while True:
                try:
                    fields = next(reader)
                except StopIteration:
                    break
                lineno = reader.line_num
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                problem = None
                if len(fields) != len(head):
                    problem = f"expected {len(head)} fields (header), got {len(fields)}"
                else:
                    values = {}
                    for c in head:
                        v = fields[idx[c]]
                        try:
                            values[c] = parsers[c](v) if v != "" or c not in columns else None
                        except ValueError:
                            problem = f"column {c!r} is {v!r}, expected {_KIND[columns[c]]}"
                            break
                        if values[c] is None:
                            problem = f"column {c!r} is empty"
                            break
                if problem is not None:
                    report.bad_line(path, lineno, problem, skip_bad_lines)
                    continue
                for c in head:
                    data[c].append(values[c])
        except UnicodeDecodeError:
            read_text(path, encoding)  # raises the error naming the line
            raise
        except csv.Error as exc:
            raise UserError(f"{path.name}:{reader.line_num}: {exc}") from None
    return pl.DataFrame(data, schema={c: columns.get(c, pl.Utf8) for c in head})


_BLOCK = 64 << 20


def _py_value(value: Any, dtype: Any) -> Any:
    """Coerce one JSON value to ``dtype`` the way the fast path would; ValueError if it cannot."""
    if value is None:
        return None
    if dtype == pl.Utf8:
        if isinstance(value, (dict, list)):
            raise ValueError("not text")
        return str(value)
    if dtype == pl.Float64:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError("not a number")
        return float(value)
    if dtype == pl.Int64:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError("not an integer")
        f = float(value)
        if f != int(f):
            raise ValueError("not an integer")
        return int(f)
    if isinstance(dtype, pl.List):
        if not isinstance(value, (list, tuple)):
            raise ValueError("not a list")
        return [_py_value(v, dtype.inner) for v in value]
    raise ValueError(f"unsupported type {dtype}")


def read_json_table(
    path: Path,
    fields: dict[str, tuple[str, Any]],
    required: list[str],
    *,
    skip_bad_lines: bool,
    report: ReadReport,
    python_literals: bool = False,
    block_bytes: int = _BLOCK,
) -> pl.DataFrame:
    """Columns ``out_name -> (json_key, dtype)`` of a JSON-lines file (plain or gzip), read in blocks.

    Each block of whole lines is parsed by polars; a block it rejects (a bad line, Python-literal lines)
    is parsed line by line in Python, so errors name ``file:line`` and ``--skip-bad-lines`` can skip.
    ``required`` fields must be present and non-null on every line.
    """
    frames: list[pl.DataFrame] = []
    schema = {out: dtype for out, (_, dtype) in fields.items()}
    first_line = 1
    with open_bytes(path) as f:
        rest = b""
        while True:
            chunk = f.read(block_bytes)
            data = rest + chunk
            if chunk:
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    rest = data
                    continue
                data, rest = data[:cut], data[cut:]
            else:
                rest = b""
            if data.strip():
                frames.append(
                    _json_block(
                        path, data, first_line, fields, required, skip_bad_lines, report, python_literals
                    )
                )
            first_line += data.count(b"\n")
            if not chunk:
                break
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat(frames)


def _json_block(
    path: Path,
    data: bytes,
    first_line: int,
    fields: dict[str, tuple[str, Any]],
    required: list[str],
    skip_bad_lines: bool,
    report: ReadReport,
    python_literals: bool,
) -> pl.DataFrame:
    import ast

    schema = {out: dtype for out, (_, dtype) in fields.items()}
    try:
        df = pl.read_ndjson(io.BytesIO(data), schema={key: dtype for key, dtype in fields.values()})
        df = df.rename({key: out for out, (key, _) in fields.items()})
        if not required or not df.select(pl.any_horizontal(pl.col(required).is_null()).any()).item():
            return df.select(list(schema))
    except (pl.exceptions.PolarsError, ValueError):
        pass
    cols: dict[str, list[Any]] = {out: [] for out in fields}
    for offset, bline in enumerate(data.split(b"\n")):
        lineno = first_line + offset
        if not bline.strip():
            continue
        problem = None
        try:
            line = bline.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(
                f"{path}:{lineno}: not valid UTF-8 ({exc.reason}); JSON files must be UTF-8"
            ) from None
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            rec, problem = None, f"not valid JSON ({exc.msg})"
            if python_literals:
                try:
                    rec, problem = ast.literal_eval(line), None
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    problem = "neither JSON nor a Python dict literal"
        if rec is not None and not isinstance(rec, dict):
            rec, problem = None, "expected an object per line"
        values: dict[str, Any] = {}
        if rec is not None:
            for out, (key, dtype) in fields.items():
                if out in required and rec.get(key) is None:
                    problem = f"missing field {key!r} (the line has: {', '.join(map(str, rec)) or 'nothing'})"
                    break
                try:
                    values[out] = _py_value(rec.get(key), dtype)
                except ValueError as exc:
                    problem = f"field {key!r} is {rec.get(key)!r}: {exc}"
                    break
        if problem is not None:
            report.bad_line(path, lineno, problem, skip_bad_lines)
            continue
        for out in fields:
            cols[out].append(values[out])
    return pl.DataFrame(cols, schema=schema)
