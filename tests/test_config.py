"""Config: every error path says what is wrong and where; defaults round-trip; migrations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from node.config import SCHEMA_VERSION, Config
from node.configload import (
    ConfigError,
    apply_overrides,
    key_lines,
    load,
    migrate,
    to_toml_dict,
    validate,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path | None, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(path, overrides or [])
    return info.value.problems


def test_no_file_gives_defaults() -> None:
    assert load() == Config()


def test_defaults_round_trip_through_toml(tmp_path: Path) -> None:
    path = write(tmp_path, tomli_w.dumps(to_toml_dict(Config())))
    assert load(path) == Config()


def test_changed_values_round_trip(tmp_path: Path) -> None:
    raw = to_toml_dict(Config())
    raw["capture"]["fps"] = 12.5
    raw["node"]["id"] = "hn-cau-giay-07"
    cfg = load(write(tmp_path, tomli_w.dumps(raw)))
    assert cfg.capture.fps == 12.5
    assert cfg.node.id == "hn-cau-giay-07"
    assert load(write(tmp_path, tomli_w.dumps(to_toml_dict(cfg)))) == cfg


def test_out_of_range_names_key_bounds_value_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "schema_version = 2\n\n[capture]\nsource = 'sim://junction'\nfps = 0\n")
    assert problems_of(path) == ["capture.fps: must be between 1 and 60, got 0 (node.toml line 5)"]


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[node]\nid = 'bad id'\nlatitude = 91\n[capture]\nfsp = 10\nmain_width = 'big'\n"
        "exposure_us = 1.5\n[ring]\nseconds = true\n[service]\nlog_level = 'loud'\n[bogus]\nx=1\n",
    )
    got = problems_of(path)
    assert got == [
        "node.id: must match [A-Za-z0-9][A-Za-z0-9._-]*, got 'bad id' (node.toml line 2)",
        "node.latitude: must be between -90 and 90, got 91 (node.toml line 3)",
        "capture.fsp: unknown key (did you mean 'fps'?) (node.toml line 5)",
        "capture.main_width: must be a number, got 'big' (node.toml line 6)",
        "capture.exposure_us: must be a whole number, got 1.5 (node.toml line 7)",
        "ring.seconds: must be a number, got True (node.toml line 9)",
        "service.log_level: must be one of debug, info, warning, error, got 'loud' "
        "(node.toml line 11)",
        "bogus: unknown key (node.toml line 12)",
    ]


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    assert problems_of(write(tmp_path, "capture = 5\n")) == [
        "capture: must be a table, got 5 (node.toml line 1)"
    ]


def test_cross_field_checks() -> None:
    with pytest.raises(ConfigError) as info:
        validate({"capture": {"lores_width": 1280, "main_width": 1024, "source": "rtsp://x"}})
    assert info.value.problems == [
        "capture.lores_width/lores_height: the detection stream (1280x544) must not exceed "
        "the main stream (1024x1080)",
        "capture.source: must start with picam://, replay:// or sim://, got 'rtsp://x'",
    ]


def test_newer_schema_refused(tmp_path: Path) -> None:
    got = problems_of(write(tmp_path, f"schema_version = {SCHEMA_VERSION + 1}\n"))
    assert got == [
        f"schema_version: must be between 1 and {SCHEMA_VERSION}, got {SCHEMA_VERSION + 1} "
        "(node.toml line 1)"
    ]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[capture\nfps = 1\n", "not valid TOML"),
        (b"\xff\xfe[x]".decode("latin-1"), "not valid TOML"),
    ],
)
def test_unreadable_files(tmp_path: Path, text: str, fragment: str) -> None:
    (problem,) = problems_of(write(tmp_path, text))
    assert fragment in problem
    assert "node.toml" in problem


def test_missing_file(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path / "absent.toml")
    assert problem.endswith("absent.toml: cannot read: No such file or directory")


def test_migration_from_v1() -> None:
    v1 = {
        "schema_version": 1,
        "camera": {"fps": 15, "source": "picam://0"},
        "site": {"node_id": "dn-01", "name": "Da Nang, Nguyen Van Linh", "lat": 16.06},
    }
    migrated = migrate(v1)
    assert migrated["schema_version"] == SCHEMA_VERSION
    cfg = validate(v1)
    assert cfg.capture.fps == 15.0
    assert cfg.capture.source == "picam://0"
    assert (cfg.node.id, cfg.node.site, cfg.node.latitude) == (
        "dn-01",
        "Da Nang, Nguyen Van Linh",
        16.06,
    )


def test_file_without_version_is_v1(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, "[camera]\nfps = 20\n"))
    assert cfg.capture.fps == 20.0


def test_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[capture]\nfps = 5\n")
    cfg = load(path, ["capture.fps=25", "node.id=cam-07", "node.site=Ha Noi"])
    assert (cfg.capture.fps, cfg.node.id, cfg.node.site) == (25.0, "cam-07", "Ha Noi")
    assert problems_of(path, ["capture.fps=0", "capture.fpss=1"]) == [
        "capture.fps: must be between 1 and 60, got 0 (--set)",
        "capture.fpss: unknown key (did you mean 'fps'?) (--set)",
    ]


def test_override_fixes_bad_file_value(tmp_path: Path) -> None:
    path = write(tmp_path, "[capture]\nfps = 0\n")
    assert load(path, ["capture.fps=10"]).capture.fps == 10.0


def test_malformed_override() -> None:
    with pytest.raises(ConfigError, match=r"--set fps: expected key.path=value"):
        apply_overrides({}, ["fps"])


def test_key_lines_tracks_tables() -> None:
    text = "a = 1\n[node]\nid = 'x'\n\n[capture]  # cam\nfps = 3\n"
    assert key_lines(text) == {"a": 1, "node": 2, "node.id": 3, "capture": 5, "capture.fps": 6}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_exit_codes(tmp_path: Path) -> None:
    good = write(tmp_path, "[capture]\nfps = 12\n")
    ok = run_cli("check-config", str(good))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[capture]\nfps = 0\nmain_width = 1\n")
    res = run_cli("check-config", str(bad))
    assert res.returncode == 1
    assert "2 problem(s)" in res.stdout
    assert "capture.fps: must be between 1 and 60, got 0 (bad.toml line 2)" in res.stdout
    assert "capture.main_width: must be between 320 and 4608, got 1 (bad.toml line 3)" in res.stdout


def test_run_refuses_invalid_config_naming_every_problem(tmp_path: Path) -> None:
    res = run_cli(
        "run", "--state-dir", str(tmp_path), "--set", "capture.fps=0", "--source", "rtsp://cam"
    )
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "roadnode: invalid config:",
        "  capture.fps: must be between 1 and 60, got 0 (--set)",
        "  capture.source: must start with picam://, replay:// or sim://, got 'rtsp://cam' (--set)",
    ]


def test_health_alarm_thresholds_need_hysteresis_the_right_way_round() -> None:
    ok = validate({"health": {"rss_raise_mb": 300.0, "rss_clear_mb": 260.0}})
    assert (ok.health.rss_raise_mb, ok.health.rss_clear_mb) == (300.0, 260.0)
    with pytest.raises(ConfigError) as info:
        validate({"health": {"rss_raise_mb": 150.0, "disk_free_raise_mb": 2048.0}})
    assert info.value.problems == [
        "health.disk_free_raise_mb: must be below health.disk_free_clear_mb (1024), got 2048",
        "health.rss_raise_mb: must be above health.rss_clear_mb (200), got 150",
    ]
