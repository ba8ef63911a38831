"""Reading raw source files: fast columnar parsing, exact ``file:line`` diagnosis, hashes, gzip, encodings.

Every delimited reader follows one pattern. The fast path parses the whole file with polars' multi-threaded
CSV reader under a strict schema. If that fails (a bad value, a missing or extra field), a slow Python pass
walks the file line by line to name the first bad line exactly, or, under ``skip_bad_lines``, to parse the
good lines and count the bad ones. Well-formed files never pay for the slow pass.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import math
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import polars as pl

from llm4rec.errors import UserError

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: exceptions polars' fast readers raise on input they cannot parse (the slow pass then names the line)
_FAST_FAILS = (pl.exceptions.PolarsError, OSError, ValueError, TypeError, OverflowError, UserError)


def _int64(text: str) -> int:
    """``int(text)`` limited to the 64-bit range the tables hold (a bigger number is a bad value)."""
    value = int(text)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError("out of the 64-bit integer range")
    return value


#: how a field of a delimited file is parsed: polars dtype -> Python converter used by the slow pass
_PY_PARSE: dict[Any, Callable[[str], Any]] = {
    pl.Int64: _int64,
    pl.Float64: float,
    pl.Utf8: str,
}
_KIND = {pl.Int64: "a 64-bit integer", pl.Float64: "a number", pl.Utf8: "text"}


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

    def skip_many(self, path: Path, n: int, message: str) -> None:
        """Count ``n`` skipped lines of ``path`` at once (e.g. out-of-range values found column-wise)."""
        if n:
            self.skipped[path.name] = self.skipped.get(path.name, 0) + n
            self.examples.setdefault(path.name, message)

    @property
    def total(self) -> int:
        """Skipped lines over all files."""
        return sum(self.skipped.values())


class _LineColumns:
    """Column lists filled one parsed line at a time by the line-by-line readers: a line is kept whole, or,
    when parsing it found a problem, handed to the report (an error, or a count with --skip-bad-lines)."""

    def __init__(self, names: Iterable[str], path: Path, report: ReadReport, skip_bad_lines: bool) -> None:
        self.data: dict[str, list[Any]] = {c: [] for c in names}
        self.path, self.report, self.skip_bad_lines = path, report, skip_bad_lines

    def add(self, lineno: int, values: dict[str, Any], problem: str | None) -> None:
        """Append ``values`` (one per column) or report line ``lineno``'s ``problem``."""
        if problem is not None:
            self.report.bad_line(self.path, lineno, problem, self.skip_bad_lines)
            return
        for c, column in self.data.items():
            column.append(values[c])


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


def is_gzip(path: Path) -> bool:
    """True if ``path`` starts with the gzip magic bytes (whatever its name)."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def has_bom(path: Path) -> bool:
    """True if the plain file ``path`` starts with a UTF-8 byte-order mark (spreadsheet programs write one)."""
    with open(path, "rb") as f:
        return f.read(3) == codecs.BOM_UTF8


class _CheckedGzip(io.RawIOBase):
    """Decompressed bytes of a gzip file; truncation or corruption is a UserError naming the file and line.

    gzip raises ``EOFError`` for a cut-off file and ``BadGzipFile``/``zlib.error`` for damaged data, with
    no file name; the line is counted from the newlines already delivered.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.inner = gzip.open(path, "rb")  # noqa: SIM115 - closed by close()
        self.lines = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            # read1: one read of the compressed stream, so the lines before a break are delivered (and
            # counted) before the error, which then names the line where the data stops
            data = self.inner.read1(len(b))
        except EOFError:
            raise UserError(
                f"{self.path}:{self.lines + 1}: the gzip file ends early (truncated, e.g. an interrupted "
                "download); download or copy it again"
            ) from None
        except (gzip.BadGzipFile, zlib.error, OSError) as exc:
            raise UserError(
                f"{self.path}:{self.lines + 1}: the gzip file is corrupt ({exc}); download or copy it again"
            ) from None
        n = len(data)
        memoryview(b)[:n] = data
        self.lines += data.count(b"\n")
        return n

    def close(self) -> None:
        self.inner.close()
        super().close()


def open_bytes(path: Path) -> IO[bytes]:
    """Open a plain or gzip-compressed file for binary reading (decompressed on the fly).

    A UTF-8 byte-order mark at the start is skipped; damaged gzip data is a UserError naming the line.
    """
    f: IO[bytes] = io.BufferedReader(_CheckedGzip(path), 1 << 20) if is_gzip(path) else open(path, "rb")  # noqa: SIM115
    try:
        if f.peek(3)[:3] == codecs.BOM_UTF8:  # type: ignore[attr-defined]
            f.read(3)
    except BaseException:
        f.close()
        raise
    return f


def _polars_source(path: Path) -> Any:
    """What polars should read: the path itself (fastest) unless the bytes need decompressing or a BOM.

    Compressed data is decompressed here, whole (polars would read a file object whole too): an error
    raised inside polars' read callback would surface as a panic instead of the file:line message.
    """
    if is_gzip(path):
        with open_bytes(path) as f:
            return io.BytesIO(f.read())
    return open_bytes(path) if has_bom(path) else path


def check_codec(encoding: str, flag: str = "--encoding") -> str:
    """Return ``encoding`` if Python knows it, else a UserError naming the flag."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise UserError(f"{flag}: unknown text encoding {encoding!r} (try utf-8 or latin-1)") from None


def read_text(path: Path, encoding: str, flag: str = "--encoding") -> str:
    """Decode a whole (small) file; an encoding error names the file, the line and the flag to change."""
    with open_bytes(path) as f:
        data = f.read()
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
            return _not_empty(df, path, report)
    # slow path: exact diagnosis, or parse-and-skip
    rows = _LineColumns(names, path, report, skip_bad_lines)
    parsers = [_PY_PARSE[d] for d in schema.values()]
    for lineno, line in iter_lines(path, encoding):
        if not line.strip():
            continue
        fields = line.split(sep)
        problem = _describe(fields, schema, sep, names)
        values = {} if problem else {n: p(v) for n, p, v in zip(names, parsers, fields)}
        rows.add(lineno, values, problem)
    return _not_empty(pl.DataFrame(rows.data, schema=schema), path, report)


def _not_empty(df: pl.DataFrame, path: Path, report: ReadReport) -> pl.DataFrame:
    """``df``, or a UserError when the file gave no rows at all (empty, or every line skipped as bad)."""
    if df.height:
        return df
    if report.skipped.get(path.name):
        raise UserError(f"{path}: every line was skipped as bad (e.g. {report.examples[path.name]})")
    raise UserError(f"{path}: the file holds no data lines")


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
            _polars_source(path),
            separator=sep[0],
            has_header=False,
            schema=read_schema,
            quote_char=None,
            encoding="utf8-lossy",
        )
    except _FAST_FAILS:
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
    try:
        source: Any = _polars_source(path) if utf8 else io.BytesIO(read_text(path, encoding).encode("utf-8"))
        df = pl.read_csv(source, separator=sep, schema=overrides, quote_char=quote_char, encoding="utf8")
        if (
            df.columns == head
            and not df.select(pl.any_horizontal(pl.col(list(columns)).is_null()).any()).item()
        ):
            return _not_empty(df, path, report)
    except _FAST_FAILS:
        pass
    return _not_empty(
        _slow_csv(path, sep, encoding, quote_char, head, columns, skip_bad_lines, report), path, report
    )


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
        rows = _LineColumns(head, path, report, skip_bad_lines)
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
                problem, values = None, {}
                if len(fields) != len(head):
                    problem = f"expected {len(head)} fields (header), got {len(fields)}"
                else:
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
                rows.add(lineno, values, problem)
        except UnicodeDecodeError:
            read_text(path, encoding)  # raises the error naming the line
            raise
        except csv.Error as exc:
            raise UserError(f"{path.name}:{reader.line_num}: {exc}") from None
    return pl.DataFrame(rows.data, schema={c: columns.get(c, pl.Utf8) for c in head})


_BLOCK = 64 << 20


def _py_value(value: Any, dtype: Any) -> Any:
    """Coerce one JSON value to ``dtype`` the way the fast path would; ValueError if it cannot."""
    if value is None:
        return None
    if dtype == pl.Utf8:
        if isinstance(value, (dict, list, bool)):
            raise ValueError(f"expected text or a number, got a JSON {type(value).__name__}")
        return str(value)
    if dtype == pl.Float64:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError("not a number")
        return float(value)
    if dtype == pl.Int64:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError("not an integer")
        if isinstance(value, int):
            number = value
        else:
            f = float(value)
            if not math.isfinite(f) or f != int(f):
                raise ValueError("not an integer")
            number = int(f)
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise ValueError("out of the 64-bit integer range")
        return number
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
    encoding: str = "utf-8",
) -> pl.DataFrame:
    """Columns ``out_name -> (json_key, dtype)`` of a JSON-lines file (plain or gzip), read in blocks.

    Each block of whole lines is parsed by polars; a block it rejects (a bad line, Python-literal lines,
    an object or list where text is expected) is parsed line by line in Python, so errors name
    ``file:line`` and ``--skip-bad-lines`` can skip. ``required`` fields must be present and non-null on
    every line. A file that is not UTF-8 is decoded with ``encoding`` (``--encoding``).
    """
    utf8 = check_codec(encoding) == "utf-8"
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
                if not utf8:
                    data = _transcode(path, data, first_line, encoding)
                frames.append(
                    _json_block(
                        path, data, first_line, fields, required, skip_bad_lines, report, python_literals
                    )
                )
            first_line += data.count(b"\n")
            if not chunk:
                break
    df = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    return _not_empty(df, path, report)


def _transcode(path: Path, data: bytes, first_line: int, encoding: str) -> bytes:
    """A block of ``encoding`` text as UTF-8 (what polars and the JSON parser read)."""
    try:
        return data.decode(encoding).encode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + data[: exc.start].count(b"\n")
        raise UserError(
            f"{path.name}:{line}: not valid {encoding} text ({exc.reason}); pass --encoding with the "
            "file's encoding"
        ) from None


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
        text = [out for out, dtype in schema.items() if dtype == pl.Utf8]
        # polars renders an object or list given where text is expected as its JSON text: such a block
        # takes the Python pass, which tells a JSON object from a string that merely starts with '{'
        nested = (
            text
            and df.select(
                pl.any_horizontal(pl.col(text).str.starts_with("{") | pl.col(text).str.starts_with("[")).any()
            ).item()
        )
        missing = required and df.select(pl.any_horizontal(pl.col(required).is_null()).any()).item()
        if not nested and not missing:
            return df.select(list(schema))
    except _FAST_FAILS:
        pass
    rows = _LineColumns(fields, path, report, skip_bad_lines)
    for offset, bline in enumerate(data.split(b"\n")):
        lineno = first_line + offset
        if not bline.strip():
            continue
        problem = None
        try:
            line = bline.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(
                f"{path.name}:{lineno}: not valid UTF-8 text ({exc.reason}); pass --encoding with the file's "
                "encoding, e.g. --encoding latin-1"
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
        rows.add(lineno, values, problem)
    return pl.DataFrame(rows.data, schema=schema)


def record_line(path: Path, k: int, *, encoding: str = "utf-8", header: bool = False, sep: str = ",") -> int:
    """The file line of data record ``k`` (0-based; blank lines and, with ``header``, the header not counted).

    Used only to name the line of a bad value found column-wise, so its cost never touches good files.
    With ``header`` the file is read as CSV (a quoted field may span lines; the record's last line counts).
    """
    import csv

    seen = -1
    if header:
        with open_bytes(path) as raw:
            reader = csv.reader(io.TextIOWrapper(raw, encoding=encoding, newline=""), delimiter=sep)
            next(reader, None)
            for fields in reader:
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                seen += 1
                if seen == k:
                    return reader.line_num
    else:
        for lineno, line in iter_lines(path, encoding):
            if line.strip():
                seen += 1
                if seen == k:
                    return lineno
    return 0


def reject_rows(
    df: pl.DataFrame,
    bad: pl.Expr,
    path: Path,
    problem: Callable[[dict[str, Any]], str],
    locate: Callable[[int], str],
    *,
    skip_bad_lines: bool,
    report: ReadReport,
) -> pl.DataFrame:
    """Rows of ``df`` where ``bad`` holds are bad lines: stop at the first, or under ``skip_bad_lines``
    drop and count them all. ``problem(row)`` says what is wrong; ``locate(k)`` names row k's place
    (``file:line``, or the row of a Parquet file)."""
    mask = df.select(bad.fill_null(False)).to_series()
    if not mask.any():
        return df
    first = int(mask.arg_true()[0])
    what = problem(df.row(first, named=True))
    if not skip_bad_lines:
        raise UserError(f"{locate(first)}: {what} (pass --skip-bad-lines to skip and count such lines)")
    # lines skipped earlier shift the record numbers: the example names the file only
    report.skip_many(path, int(mask.sum()), f"{path.name}: {what}")
    return df.filter(~mask)


def out_of_range(col: str, lo: float, hi: float) -> pl.Expr:
    """True where ``col`` is NaN, infinite or outside ``[lo, hi]`` (nulls are not judged here)."""
    c = pl.col(col)
    return c.is_nan() | (c < lo) | (c > hi)


def line_locator(
    path: Path, *, encoding: str = "utf-8", header: bool = False, sep: str = ","
) -> Callable[[int], str]:
    """``k -> 'file:line'`` for :func:`reject_rows` on a text file."""
    return lambda k: f"{path.name}:{record_line(path, k, encoding=encoding, header=header, sep=sep)}"
