"""Ingest: raw exports (CSV / JSONL / Parquet) -> Note rows, with quarantine and counts.

Every row read is either kept or quarantined with a reason code; ``rows_in == kept +
quarantined`` always holds. Quarantined rows are written out (on site, next to the prepared
data) so nothing is silently lost. Error messages name file, row and field, never the text.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from clinitune.data.sections import sections_dict, split_sections
from clinitune.errors import DataError
from clinitune.recipe import SourceSpec


@dataclass
class Note:
    note_id: str
    patient_id: str
    source: str
    text: str
    dialogue: str | None = None
    meta: dict[str, str] = field(default_factory=dict)
    lexicon: Mapping[str, str] | None = field(default=None, repr=False, compare=False)
    """Header lexicon for ``sections`` (``data.section_headers`` added to the built-in one);
    None = the built-in lexicon."""

    @cached_property
    def sections(self) -> dict[str, str]:
        """Canonical section name -> body, parsed once and shared by the data card and every
        task builder. Read it only after the PHI gate, the last step that rewrites ``text``."""
        return sections_dict(split_sections(self.text, self.lexicon))


@dataclass
class IngestResult:
    source: str
    notes: list[Note]
    quarantined: list[dict[str, Any]]
    rows_in: int
    reasons: Counter[str]
    patient_column: bool

    @property
    def counts(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "kept": len(self.notes),
            "quarantined": len(self.quarantined),
            "quarantine_reasons": dict(self.reasons),
        }


def _detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = "".join(path.suffixes[-2:]).lower()
    for ext, name in (
        (".csv", "csv"),
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".parquet", "parquet"),
    ):
        if suffix.endswith(ext) or suffix.endswith(ext + ".gz"):
            return name
    raise DataError(
        f"{path}: cannot tell the format from the file name; set format: csv|jsonl|parquet"
    )


def _iter_csv(path: Path, encoding: str) -> Iterator[tuple[int, dict[str, Any]]]:
    # Notes contain commas, quotes and newlines: the csv module handles quoted multi-line fields.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # notes of 50 KB+ exceed the 128 KB default
    # surrogateescape: an undecodable byte becomes a lone surrogate in that row's field, so the
    # row can be named (or quarantined) instead of failing at a byte offset in the file.
    try:
        with _open_text(path, _utf8(encoding)) as f:
            reader = csv.DictReader(f)
            for i, row in enumerate(reader, start=2):  # row 1 is the header
                if None in row:  # more fields than the header
                    yield i, {"__error__": "more fields than the header"}
                    continue
                yield i, row
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e})") from None
    except (gzip.BadGzipFile, EOFError):
        raise DataError(f"{path}: not a valid gzip file") from None


def _open_text(path: Path, encoding: str):  # -> TextIO
    """Plain or gzip-compressed text (MIMIC-IV-Note ships as .csv.gz)."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="", errors="surrogateescape")
    return open(path, encoding=encoding, newline="", errors="surrogateescape")


def _utf8(encoding: str) -> str:
    # utf-8-sig reads plain UTF-8 too and drops a leading BOM (Windows exports add one).
    return "utf-8-sig" if encoding.lower().replace("_", "-") in {"utf-8", "utf8"} else encoding


_SURROGATE = re.compile("[\udc80-\udcff]")


def _undecodable(row: dict[str, Any]) -> str | None:
    """The first column holding bytes that did not decode, if any."""
    for k, v in row.items():
        if isinstance(v, str) and _SURROGATE.search(v):
            return str(k)
    return None


def _iter_jsonl(path: Path, encoding: str) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with _open_text(path, _utf8(encoding)) as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    yield i, {"__error__": f"invalid JSON at column {e.colno}"}
                    continue
                yield i, obj if isinstance(obj, dict) else {"__error__": "not a JSON object"}
    except (gzip.BadGzipFile, EOFError):
        raise DataError(f"{path}: not a valid gzip file") from None


_TEXT_TYPES = ("string", "large_string", "null")


def _iter_parquet(path: Path, text_columns: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        for c in text_columns:  # a text column of numbers or lists is a wrong export, not notes
            if c in schema.names and str(schema.field(c).type) not in _TEXT_TYPES:
                raise DataError(
                    f"{path}: column {c!r} has type {schema.field(c).type}, expected string"
                )
        for batch in pf.iter_batches(batch_size=4096):
            for rec in batch.to_pylist():
                row += 1
                yield row, rec
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"{path}: unreadable Parquet after row {row} ({type(e).__name__})"
        ) from None


def iter_rows(
    path: Path, fmt: str, encoding: str, text_columns: list[str] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    fmt = _detect_format(path, fmt)
    if fmt == "csv":
        return _iter_csv(path, encoding)
    if fmt == "jsonl":
        return _iter_jsonl(path, encoding)
    return _iter_parquet(path, text_columns or [])


def _as_str(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, float) and v != v:  # NaN from pandas-written files
        return None
    return str(v)


class SourceReader:
    """Streams one source's rows as :class:`Note` objects; quarantined rows go to
    ``on_quarantine``. ``counts`` is complete once the iterator is exhausted."""

    def __init__(self, spec: SourceSpec, path: Path) -> None:
        self.spec = spec
        self.path = path
        self.rows_in = 0
        self.kept = 0
        self.reasons: Counter[str] = Counter()
        self.patient_column = spec.columns.patient_id is not None

    @property
    def counts(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "kept": self.kept,
            "quarantined": sum(self.reasons.values()),
            "quarantine_reasons": dict(self.reasons),
        }

    def notes(self, on_quarantine: Callable[[dict[str, Any]], None]) -> Iterator[Note]:
        spec, path, cols = self.spec, self.path, self.spec.columns
        checked_header = False
        text_cols = [c for c in (cols.text, cols.dialogue) if c]

        def quarantine(row_no: int, reason: str, row: dict[str, Any] | None = None) -> None:
            self.reasons[reason] += 1
            q: dict[str, Any] = {"source": spec.name, "row": row_no, "reason": reason}
            if row is not None:
                q["data"] = _jsonable(row)
            on_quarantine(q)

        for row_no, row in iter_rows(path, spec.format, spec.encoding, text_cols):
            if spec.limit is not None and self.rows_in >= spec.limit:
                break
            self.rows_in += 1
            if "__error__" in row:
                quarantine(row_no, "unparseable_row")
                continue
            if not checked_header:
                wanted = [c for c in (cols.note_id, cols.text, cols.patient_id, cols.dialogue) if c]
                wanted += list(cols.meta.values())
                missing = [c for c in wanted if c not in row]
                if missing:
                    raise DataError(
                        f"{path}: column {missing[0]!r} (from data.sources[{spec.name}].columns) "
                        f"not found; {_describe_header(row.keys())}"
                    )
                checked_header = True
            bad = _undecodable(row)
            if bad is not None:
                if spec.decode_errors == "error":
                    raise DataError(
                        f"{path}: row {row_no}, column {bad!r}: bytes that are not valid "
                        f"{spec.encoding}; set the source's encoding (e.g. latin-1) or "
                        "decode_errors: quarantine"
                    )
                quarantine(row_no, "undecodable_bytes", row)
                continue
            wrong = [c for c in text_cols if not isinstance(row.get(c), (str, type(None)))]
            if wrong:  # e.g. a JSON list or number where the note text should be
                quarantine(row_no, "wrong_type", row)
                continue
            note_id = (_as_str(row.get(cols.note_id)) or "").strip()
            text = _as_str(row.get(cols.text)) or ""
            reason = None
            if not note_id:
                reason = "missing_note_id"
            elif not text.strip():
                reason = "empty_text"
            patient = note_id
            if cols.patient_id and not reason:
                patient = (_as_str(row.get(cols.patient_id)) or "").strip()
                if not patient:
                    reason = "missing_patient_id"
            dialogue = _as_str(row.get(cols.dialogue)) if cols.dialogue else None
            if cols.dialogue and not reason and not (dialogue or "").strip():
                reason = "empty_dialogue"
            if reason:
                quarantine(row_no, reason, row)
                continue
            meta = {k: (_as_str(row.get(c)) or "") for k, c in cols.meta.items()}
            self.kept += 1
            yield Note(note_id, patient, spec.name, text, dialogue, meta)
        if self.rows_in == 0:
            raise DataError(f"{path}: no rows")


def ingest_source(spec: SourceSpec, path: Path) -> IngestResult:
    """All of a source in memory (small inputs and tests; ``prepare`` streams instead)."""
    reader = SourceReader(spec, path)
    quarantined: list[dict[str, Any]] = []
    notes = list(reader.notes(quarantined.append))
    return IngestResult(
        spec.name, notes, quarantined, reader.rows_in, reader.reasons, reader.patient_column
    )


def _describe_header(keys: Any) -> str:
    """Column names for an error message -- unless the first line does not look like a header
    (a headerless export would otherwise echo a note's first row, i.e. PHI)."""
    names = [str(k) for k in keys]
    if len(names) > 50 or any(len(n) > 40 or "\n" in n for n in names):
        return "the first line does not look like a header row (a header is required)"
    return "columns are: " + ", ".join(names)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    def value(v: Any) -> Any:
        if isinstance(v, str):  # undecodable bytes (lone surrogates) shown as \\xNN escapes
            return v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return v if isinstance(v, (int, float, bool)) or v is None else str(v)

    return {str(k): value(v) for k, v in row.items()}
