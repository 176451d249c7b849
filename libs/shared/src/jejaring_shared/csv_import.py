"""CSV imports that report every bad row and take the good ones.

Used by the catalog's product import and meant for stock's opening-stock import: read the
file into (line, cells) rows, validate each row with a pydantic model, and collect a
`RowError` (line, field, stable code, reason) for every row that cannot be taken. The
service then applies the good rows idempotently (upsert by its natural key), so the same
file can be imported again without creating duplicates.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import _PYDANTIC_CODES, ApiError

M = TypeVar("M", bound=BaseModel)


class RowError(BaseModel):
    """One bad row: `line` is the file line where the row starts (the header is line 1)."""

    line: int
    field: str | None = None
    code: str
    reason: str


class ImportReport(BaseModel):
    """What an import did; `errors` lists every row that was not taken, in line order."""

    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    dry_run: bool = False
    errors: list[RowError] = []

    def reject(self, errors: Iterable[RowError]) -> None:
        self.errors.extend(errors)

    def finish(self) -> ImportReport:
        self.errors.sort(key=lambda e: e.line)
        self.rejected = len({e.line for e in self.errors})
        return self


def decode_csv(body: bytes, *, max_bytes: int) -> str:
    """The request body as text: UTF-8 (a BOM from spreadsheets is dropped), bounded."""
    if len(body) > max_bytes:
        raise ApiError(413, "payload_too_large", f"the file is over {max_bytes} bytes")
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400, "invalid_encoding", f"the file is not UTF-8 (byte {exc.start})"
        ) from None


def read_rows(
    text: str,
    *,
    columns: Sequence[str],
    required: Sequence[str],
    max_rows: int,
) -> tuple[list[tuple[int, dict[str, str]]], list[RowError]]:
    """Rows as (line, {column: stripped cell}) with empty cells left out, plus row errors.

    The header must name known columns only (any order) and include `required`; a bad
    header refuses the whole file (400), since no row could be read right, and so does a
    broken quote anywhere (400 `malformed_csv` with its line): no row after it could be.
    """
    # Not strict: spreadsheets and hand edits write `"Indomie" Goreng`, which strict mode
    # refuses. A quote left open shows as a row whose cell ran across lines (below).
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ApiError(400, "empty_file", "the file has no header line") from None
    except csv.Error as exc:
        raise ApiError(400, "malformed_csv", f"line 1: {exc}") from None
    unknown = [h for h in header if h not in columns]
    if unknown:
        raise ApiError(400, "unknown_column", f"unknown column {unknown[0]!r}", unknown[0])
    missing = [c for c in required if c not in header]
    if missing:
        raise ApiError(400, "missing_column", f"the header lacks {missing[0]!r}", missing[0])
    if len(set(header)) != len(header):
        raise ApiError(400, "duplicate_column", "a column is named twice")
    rows: list[tuple[int, dict[str, str]]] = []
    errors: list[RowError] = []
    next_line = reader.line_num + 1
    while True:
        line = next_line
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # The reader cannot find the rows after a broken quote: reporting this one row
            # would silently drop every row after it. Nothing of the file is taken.
            raise ApiError(
                400,
                "malformed_csv",
                f"line {line}: {exc} (a quote left open?); nothing of the file was applied",
            ) from None
        next_line = reader.line_num + 1
        if not cells or all(not c.strip() for c in cells):
            continue  # blank lines are not rows
        if len(rows) + len(errors) >= max_rows:
            raise ApiError(413, "too_many_rows", f"the file has over {max_rows} rows")
        if len(cells) != len(header) and any("\n" in c or "\r" in c for c in cells):
            # A quote left open: the reader took the lines after it into this cell, and
            # reporting one bad row would silently drop them. Nothing of the file is taken.
            raise ApiError(
                400,
                "malformed_csv",
                f"line {line}: a quote left open runs across lines; nothing of the file was "
                "applied",
            )
        if len(cells) != len(header):
            errors.append(
                RowError(
                    line=line,
                    code="malformed_row",
                    reason=f"{len(cells)} cells where the header has {len(header)}",
                )
            )
            continue
        rows.append((line, {h: c.strip() for h, c in zip(header, cells, strict=True) if c.strip()}))
    return rows, errors


def validate_row(model: type[M], line: int, cells: dict[str, Any]) -> M | list[RowError]:
    """The row as `model`, or its errors with the same codes the JSON API uses."""
    try:
        return model.model_validate(cells)
    except ValidationError as exc:
        return [
            RowError(
                line=line,
                field=".".join(str(p) for p in err.get("loc", ())) or None,
                code=_PYDANTIC_CODES.get(str(err.get("type")), "invalid"),
                reason=str(err.get("msg")),
            )
            for err in exc.errors()
        ]
