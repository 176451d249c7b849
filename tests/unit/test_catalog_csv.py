"""The CSV reading behind the catalog import: lines, reasons and whole-file refusals."""

from __future__ import annotations

import pytest

from jejaring_catalog.api.importer import _parse
from jejaring_shared.csv_import import ImportReport, read_rows
from jejaring_shared.errors import ApiError


def parse(text: str) -> tuple[list[str], ImportReport]:
    report = ImportReport()
    good = _parse(text, 1000, report)
    return [p.sku for _, p in good], report.finish()


def test_lines_count_from_the_header_and_skip_blank_lines() -> None:
    text = 'sku,name,unit\nA,Apple,pcs\n\nB,"Banana\nsplit",pcs\nC,,pcs\n'
    skus, report = parse(text)
    assert skus == ["A", "B"]
    assert [(e.line, e.field, e.code) for e in report.errors] == [(6, "name", "required")]
    assert report.rows == 3 and report.rejected == 1


def test_every_bad_row_is_reported_with_its_reason() -> None:
    text = (
        "sku,name,unit,case_pack,perishable,shelf_life_days,pareto_class,barcode\n"
        "A,Apple,pcs,-1,,,,\n"
        "B,Bread,pcs,1,true,,,\n"
        "C,Cake,pcs,1,false,3,,\n"
        "D,Dates,pcs,1,,,Q,\n"
        "E,Egg,pcs,1,,,,12345678\n"
        "E,Egg again,pcs,1,,,,\n"
        "F,Fig,pcs,1,,,,12345678\n"
        "G,Grape,pcs\n"
        "H,Honey,pcs,2,no,,A,\n"
    )
    skus, report = parse(text)
    assert skus == ["E", "H"]
    assert [(e.line, e.field, e.code) for e in report.errors] == [
        (2, "case_pack", "too_small"),
        (3, "shelf_life_days", "required"),
        (4, "shelf_life_days", "not_perishable"),
        (5, "pareto_class", "invalid"),
        (7, "sku", "duplicate_sku"),
        (8, "barcode", "duplicate_barcode"),
        (9, None, "malformed_row"),
    ]
    assert "line 6" in report.errors[4].reason


@pytest.mark.parametrize(
    ("text", "code", "field"),
    [
        ("", "empty_file", None),
        ("sku,name\n", "missing_column", "unit"),
        ("sku,name,unit,colour\n", "unknown_column", "colour"),
        ("sku,name,unit,name\n", "duplicate_column", None),
    ],
)
def test_a_bad_header_refuses_the_file(text: str, code: str, field: str | None) -> None:
    with pytest.raises(ApiError) as caught:
        read_rows(
            text, columns=("sku", "name", "unit"), required=("sku", "name", "unit"), max_rows=9
        )
    assert (caught.value.status, caught.value.code, caught.value.field) == (400, code, field)


def test_too_many_rows_is_refused() -> None:
    text = "sku,name,unit\n" + "".join(f"S{i},N,pcs\n" for i in range(11))
    with pytest.raises(ApiError) as caught:
        read_rows(text, columns=("sku", "name", "unit"), required=(), max_rows=10)
    assert caught.value.status == 413


def test_a_quote_left_open_refuses_the_file_with_its_line() -> None:
    """A broken quote made the reader take every later line into one cell (reported as
    one malformed row, the rest of the file silently dropped): the file is refused."""
    text = 'sku,name,unit\nA,Apple,pcs\nB,"Banana,pcs\n' + "C,Cake,pcs\n" * 500
    with pytest.raises(ApiError) as caught:
        read_rows(text, columns=("sku", "name", "unit"), required=(), max_rows=1000)
    assert (caught.value.status, caught.value.code) == (400, "malformed_csv")
    assert caught.value.message.startswith("line 3:")
    # What spreadsheets and hand edits write still reads: a quoted word before more text.
    rows, errors = read_rows(
        'sku,name,unit\nA,"Indomie" Goreng,pcs\nB,Kacang 5" pack,pcs\n',
        columns=("sku", "name", "unit"),
        required=(),
        max_rows=10,
    )
    assert [cells["name"] for _, cells in rows] == ["Indomie Goreng", 'Kacang 5" pack']
    assert errors == []
