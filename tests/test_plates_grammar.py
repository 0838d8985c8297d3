"""The Vietnamese plate grammar: valid plates formatted, invalid reads kept and flagged."""

from __future__ import annotations

import numpy as np
import pytest

from node.capture.platerender import LAYOUTS, PLATE_PATTERNS, random_plate_text
from node.plates.grammar import edit_distance, normalize, parse_rows, parse_text


@pytest.mark.parametrize(
    ("rows", "text", "kind"),
    [
        (("98A12345",), "98A-123.45", "car"),
        (("30E1234",), "30E-1234", "car"),
        (("29LD12345",), "29LD-123.45", "car"),
        (("98A", "12345"), "98A-123.45", "car"),
        (("51G", "1234"), "51G-1234", "car"),
        (("29B1", "12345"), "29-B1 123.45", "moto"),
        (("59X2", "1234"), "59-X2 1234", "moto"),
        (("59AA", "1234"), "59AA-1234", "car"),  # two letters: a car series (see grammar)
    ],
)
def test_valid_rows_are_formatted(rows: tuple[str, ...], text: str, kind: str) -> None:
    plate = parse_rows(rows)
    assert plate.valid
    assert plate.reason == ""
    assert plate.text == text
    assert plate.kind == kind
    assert plate.raw == "".join(rows)


@pytest.mark.parametrize(
    ("rows", "why"),
    [
        (("98A12S45",), "not PP"),  # a letter in the serial
        (("98A123",), "not PP"),  # serial too short
        (("98A1234567",), "not PP"),  # serial too long
        (("A8A12345",), "not PP"),  # province is not two digits
        (("10A12345",), "province code 10"),
        (("13A12345",), "province code 13"),  # a code never issued
        (("98I12345",), "series letter I"),  # I reads as 1: not issued
        (("29O1", "12345"), "series letter O"),
        (("98A", "12B45"), "bottom row"),
        (("98", "12345"), "top row"),
        (("98A", "123", "45"), "3 rows"),
        (("",), "not PP"),
    ],
)
def test_invalid_reads_are_kept_and_flagged(rows: tuple[str, ...], why: str) -> None:
    plate = parse_rows(rows)
    assert not plate.valid
    assert why in plate.reason
    # never "corrected": the text is exactly what was read
    assert plate.text == "".join(rows)


def test_a_near_miss_is_not_corrected_into_a_valid_plate() -> None:
    # O for 0 and S for 5 are the classic confusions; the grammar must not swap them back
    plate = parse_rows(("98A1O3S5",))
    assert not plate.valid
    assert plate.text == "98A1O3S5"


@pytest.mark.parametrize(
    ("text", "formatted"),
    [
        ("98A-123.45", "98A-123.45"),
        ("98a 12345", "98A-123.45"),
        ("29-B1 123.45", "29-B1 123.45"),
        ("29B112345", "29-B1 123.45"),
        ("30E-1234", "30E-1234"),
    ],
)
def test_parse_text(text: str, formatted: str) -> None:
    assert parse_text(text).text == formatted


def test_every_renderer_plate_is_valid_and_round_trips() -> None:
    rng = np.random.default_rng(3)
    for layout in LAYOUTS:
        for _ in range(200):
            text = random_plate_text(layout, rng)
            assert PLATE_PATTERNS[layout].fullmatch(text)
            plate = parse_text(text)
            assert plate.valid, (text, plate.reason)
            assert plate.text == text


def test_normalize_and_edit_distance() -> None:
    assert normalize(" 98a-123.45 ") == "98A12345"
    assert edit_distance("98A12345", "98A12345") == 0
    assert edit_distance("98A12345", "98A12346") == 1
    assert edit_distance("98A12345", "98A1234") == 1
    assert edit_distance("", "ABC") == 3
    assert edit_distance("kitten", "sitting") == 3
