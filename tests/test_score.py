"""score-sim: the matching of reported to true violations, and a short run end to end."""

from __future__ import annotations

from node.capture.simtraffic import TrueViolation
from node.config import Config
from node.infer.detector import PlateDetector
from node.infer.manifest import DEFAULT_MANIFEST
from node.rules.score import counted, match_rule, score_sim, scored


def tv(vehicle: int, rule: str, seq: int) -> TrueViolation:
    return TrueViolation(vehicle, rule, "98A-123.45", seq, "car")


def test_one_report_per_true_violation_and_the_rest_are_duplicates() -> None:
    true = [tv(7, "red_light", 100), tv(8, "red_light", 300)]
    reports = [(102, 7), (105, 7), (290, 8), (500, 8), (120, None), (110, 9)]
    matched, duplicates = match_rule("red_light", reports, true, window=30)
    assert matched == {0: 0, 2: 1}
    assert duplicates == {1}  # the same offence counted twice
    # (500, 8) is outside the window, (120, None) covers no vehicle, (110, 9) never offended:
    # all three are neither matched nor duplicates, so they count as false positives


def test_a_wrong_way_report_may_come_before_the_sim_records_it() -> None:
    true = [tv(5, "wrong_way", 800)]
    matched, _ = match_rule("wrong_way", [(700, 5)], true, window=30)
    assert matched == {0: 0}  # 10 s early: the vehicle was already driving against its lane
    matched, _ = match_rule("red_light", [(700, 5)], [tv(5, "red_light", 800)], window=30)
    assert matched == {}
    matched, _ = match_rule("wrong_way", [(840, 5)], true, window=30)
    assert matched == {}  # long after it left: not this offence


def test_reports_take_the_nearest_free_true_violation() -> None:
    true = [tv(3, "solid_line", 100), tv(3, "solid_line", 140)]  # two lane changes
    matched, duplicates = match_rule("solid_line", [(138, 3), (104, 3)], true, window=50)
    assert matched == {0: 1, 1: 0}
    assert not duplicates


def test_unresolvable_and_unseen_violations_do_not_count_towards_recall() -> None:
    near_end = TrueViolation(2, "solid_line", "98A-123.45", 40, "car", unresolvable=True)
    true = [tv(1, "solid_line", 10), near_end, tv(3, "solid_line", 70)]
    assert counted(true, lambda t: t.vehicle_id != 3) == {0}  # 3: its plate never resolvable
    assert counted(true, lambda t: True) == {0, 2}


def test_the_run_s_tail_is_left_out_on_both_sides() -> None:
    """Cut at 1459, window 30: a report just after the cut of a violation before it is scored;
    a report before the cut of a wrong-way offence the sim records after it (the car reaches
    the stop line in the tail) is left out like that offence; other reports up to the cut are
    scored, matched or not."""
    true = [tv(1, "wrong_way", 1450), tv(2, "wrong_way", 1465)]
    reports = [(1470, 1), (1446, 2), (1400, 3), (1480, 4)]
    assert scored("wrong_way", reports, true, cut=1459, window=30) == [0, 2]
    # the same report of a violation before the cut is scored
    assert scored("wrong_way", [(1446, 2)], [tv(2, "wrong_way", 1455)], 1459, 30) == [0]


def test_short_default_run_scores_every_rule() -> None:
    """40 simulated seconds through the real detector, tracker, signal and rules."""
    detector = PlateDetector(DEFAULT_MANIFEST, threads=1)
    r = score_sim(Config(), detector, seed=1, duration_s=40.0)
    assert r["processed"] == r["frames"] == 400
    red = r["rules"]["red_light"]
    assert red["true"] >= 1, red
    assert red["correct"] >= 1, red
    for name, rule in r["rules"].items():
        assert rule["correct"] + rule["duplicates"] <= rule["reported"], name
        assert len(rule["events"]) == rule["reported"], name
        if rule["precision"] is not None:
            assert rule["precision"] == round(rule["correct"] / rule["reported"], 3), name
