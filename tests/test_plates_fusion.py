"""Fusing a track's reads: per-character voting weighted by confidence."""

from __future__ import annotations

from node.infer.reader import PlateRead, make_read
from node.plates.fusion import fuse


def read(rows: tuple[str, ...], conf: float | list[float], seq: int = 0) -> PlateRead:
    n = [len(r) for r in rows]
    flat = [conf] * sum(n) if isinstance(conf, float) else conf
    assert len(flat) == sum(n)
    confs, at = [], 0
    for k in n:
        confs.append(tuple(flat[at : at + k]))
        at += k
    return make_read(rows, tuple(confs), seq)


def test_majority_wins_per_character() -> None:
    reads = [
        read(("98A12345",), 0.9, 1),
        read(("98A12845",), 0.9, 2),  # one frame saw an 8
        read(("96A12345",), 0.9, 3),  # another a 6
    ]
    fused = fuse(reads)
    assert fused is not None
    assert fused.raw == "98A12345"
    assert fused.text == "98A-123.45"
    assert fused.valid
    assert fused.support == 3
    assert len(fused.reads) == 3
    # the disputed characters are less sure than the agreed ones
    assert fused.read.char_conf[1] < fused.read.char_conf[0]
    assert fused.read.char_conf[5] < fused.read.char_conf[4]


def test_confidence_outweighs_count() -> None:
    # two doubtful reads of an 8 lose to one sure read of a 3
    reads = [
        read(("98A12345",), [0.95, 0.95, 0.95, 0.95, 0.95, 0.97, 0.95, 0.95]),
        read(("98A12845",), [0.95, 0.95, 0.95, 0.95, 0.95, 0.3, 0.95, 0.95]),
        read(("98A12845",), [0.95, 0.95, 0.95, 0.95, 0.95, 0.35, 0.95, 0.95]),
    ]
    fused = fuse(reads)
    assert fused is not None
    assert fused.raw == "98A12345"


def test_reads_of_another_shape_are_outvoted_not_merged() -> None:
    reads = [
        read(("29B1", "12345"), 0.9),
        read(("29B1", "12345"), 0.8),
        read(("29B", "12345"), 0.9),  # a row cut short: not aligned, not mixed in
    ]
    fused = fuse(reads)
    assert fused is not None
    assert fused.read.rows == ("29B1", "12345")
    assert fused.text == "29-B1 123.45"
    assert fused.support == 2
    assert len(fused.reads) == 3


def test_grammar_breaking_reads_weigh_less() -> None:
    valid = read(("98A12345",), 0.75)  # weight 0.75 ** 8 = 0.100
    broken = read(("98A1234S5",), 0.78)  # invalid: 0.78 ** 9 = 0.107, halved
    fused = fuse([broken, valid])
    assert fused is not None
    assert fused.raw == "98A12345"


def test_an_invalid_fused_read_is_flagged_not_corrected() -> None:
    fused = fuse([read(("98A12S45",), 0.9), read(("98A12S45",), 0.8)])
    assert fused is not None
    assert not fused.valid
    assert fused.text == "98A12S45"


def test_agreement_and_confidence() -> None:
    sure = fuse([read(("98A12345",), 0.99)] * 4)
    unsure = fuse([read(("98A12345",), 0.6)] * 4)
    assert sure is not None
    assert unsure is not None
    assert sure.confidence > 0.9
    assert unsure.confidence < 0.1  # 0.6 ** 8
    as_json = sure.as_dict()
    assert as_json["text"] == "98A-123.45"
    assert len(as_json["reads"]) == 4


def test_nothing_read() -> None:
    assert fuse([]) is None
    assert fuse([make_read(("",), ((),))]) is None
