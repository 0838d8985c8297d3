"""One best read per track: per-character voting weighted by confidence across its reads.

The reads of one vehicle differ by a character here and there (blur, glare, a frame where a
digit was half hidden). Fusion:

1. groups the reads by shape (the length of each row: ``98A`` / ``12345`` is (3, 5)), and
   keeps the group with the largest total weight; a read's weight is its overall confidence,
   halved when it breaks the plate grammar (shapes the grammar knows win ties over noise);
2. at every character position of that shape, each read votes for its character with that
   character's confidence; the character with the most weight wins, and its fused confidence
   is the mean over the group's reads of their confidence in the winner (a read that saw
   another character counts 0): all reads agreeing and sure give 1.0, disagreement or
   doubt lowers it;
3. the fused rows are checked by the grammar again; a fused read that breaks it is kept and
   flagged like any other read.

Only reads that came out of the reader take part; nothing is "corrected" towards a plate the
grammar would prefer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from node.infer.reader import PlateRead, make_read

INVALID_WEIGHT = 0.5


@dataclass(frozen=True, slots=True)
class FusedRead:
    """A track's best read: `read` (rows, per-character and overall confidence, grammar),
    how many reads agreed in shape (`support`) of how many were made (`reads`)."""

    read: PlateRead
    support: int
    reads: tuple[PlateRead, ...]

    @property
    def text(self) -> str:
        return self.read.text

    @property
    def raw(self) -> str:
        return self.read.raw

    @property
    def confidence(self) -> float:
        return self.read.confidence

    @property
    def valid(self) -> bool:
        return self.read.valid

    def as_dict(self, per_frame: bool = True) -> dict[str, Any]:
        out = {**self.read.as_dict(), "support": self.support, "n_reads": len(self.reads)}
        out.pop("seq", None)
        if per_frame:
            out["reads"] = [r.as_dict() for r in self.reads]
        return out


def _weight(read: PlateRead) -> float:
    return read.confidence * (1.0 if read.valid else INVALID_WEIGHT)


def _row_confs(read: PlateRead) -> list[tuple[float, ...]]:
    out, at = [], 0
    for row in read.rows:
        out.append(read.char_conf[at : at + len(row)])
        at += len(row)
    return out


def fuse(reads: Sequence[PlateRead]) -> FusedRead | None:
    """The fused read of one track's `reads` (None when none read anything)."""
    usable = [r for r in reads if r.raw and len(r.char_conf) == len(r.raw)]
    if not usable:
        return None
    groups: dict[tuple[int, ...], list[PlateRead]] = defaultdict(list)
    for r in usable:
        groups[tuple(len(row) for row in r.rows)].append(r)
    # heaviest group; ties go to the group with more reads, then the longer text
    shape, members = max(
        groups.items(),
        key=lambda kv: (sum(_weight(r) for r in kv[1]), len(kv[1]), sum(kv[0])),
    )
    rows: list[str] = []
    confs: list[tuple[float, ...]] = []
    for i, length in enumerate(shape):
        row_chars, row_conf = [], []
        for pos in range(length):
            votes: dict[str, float] = defaultdict(float)
            for r in members:
                votes[r.rows[i][pos]] += _row_confs(r)[i][pos]
            char, weight = max(votes.items(), key=lambda kv: (kv[1], kv[0]))
            row_chars.append(char)
            row_conf.append(round(min(1.0, weight / len(members)), 4))
        rows.append("".join(row_chars))
        confs.append(tuple(row_conf))
    fused = make_read(tuple(rows), tuple(confs))
    return FusedRead(fused, len(members), tuple(reads))
