"""The node's configuration: one TOML file, every key typed and bounded.

The schema is the dataclasses below; each field's metadata gives its bounds. Loading and
validation (unknown keys, types, bounds, cross-field checks, migrations, `--set` overrides)
live in `node.configload`. Defaults alone run the demo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 2
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"


def bounded(default: Any, lo: float | None = None, hi: float | None = None, doc: str = "") -> Any:
    """A numeric field with inclusive bounds."""
    return field(default=default, metadata={"min": lo, "max": hi, "doc": doc})


def choice(default: str, options: tuple[str, ...], doc: str = "") -> Any:
    """A string field that takes one of `options`."""
    return field(default=default, metadata={"choices": options, "doc": doc})


def text(
    default: str,
    max_len: int = 256,
    doc: str = "",
    pattern: str | None = None,
    required: bool = False,
) -> Any:
    """A free string field (bounded length, optional regex it must match in full)."""
    meta = {"max_len": max_len, "pattern": pattern, "doc": doc, "required": required}
    return field(default=default, metadata=meta)


def flag(default: bool, doc: str = "") -> Any:
    """A true/false field."""
    return field(default=default, metadata={"doc": doc})


Point = tuple[float, float]
COORD_LIMIT = 100_000.0  # no coordinate (pixels or metres) beyond this
DIRECTIONS: dict[str, Point] = {"up": (0.0, -1.0), "down": (0.0, 1.0)}
DIRECTIONS |= {"left": (-1.0, 0.0), "right": (1.0, 0.0)}


def points(n_min: int, n_max: int, doc: str = "", required: bool = False) -> Any:
    """A list of [x, y] points: empty (not set) or `n_min`..`n_max` of them (always, if
    `required`)."""
    meta = {"min_items": n_min, "max_items": n_max, "noun": "points", "optional": not required}
    meta |= {"items": {"min": -COORD_LIMIT, "max": COORD_LIMIT}, "required": required}
    return field(default=(), metadata=meta | {"doc": doc})


def polylines(n_max: int, doc: str = "") -> Any:
    """A list of polylines, each a list of 2..64 [x, y] points."""
    line = {"min_items": 2, "max_items": 64, "noun": "points"}
    line["items"] = {"min": -COORD_LIMIT, "max": COORD_LIMIT}
    meta = {"min_items": 0, "max_items": n_max, "noun": "lines", "items": line, "doc": doc}
    return field(default=(), metadata=meta)


def vector(default: Point, doc: str = "", required: bool = False) -> Any:
    """An [dx, dy] direction in image pixels, or one of the names in `DIRECTIONS`."""
    meta = {"aliases": DIRECTIONS, "min": -COORD_LIMIT, "max": COORD_LIMIT}
    return field(default=default, metadata=meta | {"required": required, "doc": doc})


def tables(noun: str, n_max: int, doc: str = "") -> Any:
    """A list of tables (TOML `[[section.key]]`), at most `n_max` of them."""
    meta = {"min_items": 0, "max_items": n_max, "noun": noun, "doc": doc}
    return field(default=(), metadata=meta)


@dataclass(frozen=True)
class NodeConfig:
    """Identity and site: they go into every evidence packet."""

    id: str = text("demo-node-01", 64, "node id, unique in the fleet", ID_PATTERN)
    site: str = text("Demo junction (simulated)", 128, "site name, human readable")
    latitude: float = bounded(21.0285, -90.0, 90.0, "WGS84 degrees")
    longitude: float = bounded(105.8542, -180.0, 180.0, "WGS84 degrees")
    heading_deg: float = bounded(0.0, 0.0, 360.0, "camera heading, degrees clockwise from north")


@dataclass(frozen=True)
class CaptureConfig:
    """The camera (or its stand-in) and its two streams."""

    source: str = text("sim://junction", 512, "picam://N, replay://PATH or sim://junction?seed=N")
    fps: float = bounded(10.0, 1, 60, "frames per second asked of the source")
    main_width: int = bounded(1920, 320, 4608, "full-resolution (evidence) stream width")
    main_height: int = bounded(1080, 240, 3456, "full-resolution (evidence) stream height")
    lores_width: int = bounded(960, 160, 1920, "detection stream width")
    lores_height: int = bounded(544, 120, 1088, "detection stream height")
    exposure_us: int = bounded(0, 0, 100_000, "fixed shutter in microseconds, 0 = auto")
    analogue_gain: float = bounded(0.0, 0.0, 16.0, "fixed analogue gain, 0 = auto")
    stall_timeout_s: float = bounded(2.0, 0.2, 60.0, "no frame for this long = camera stalled")
    reconnect_max_s: float = bounded(30.0, 1.0, 600.0, "longest wait between camera reconnects")


@dataclass(frozen=True)
class RingConfig:
    """The pre-event frame ring."""

    seconds: float = bounded(4.0, 0.5, 30.0, "frames kept for pre-event evidence")
    max_mb: int = bounded(256, 8, 2048, "memory cap of the ring")


@dataclass(frozen=True)
class PipelineConfig:
    """Queues between stages."""

    queue_frames: int = bounded(4, 1, 64, "frames waiting for detection; oldest dropped")


@dataclass(frozen=True)
class DetectorConfig:
    """The plate detector (a TFLite model named by a JSON manifest)."""

    model: str = text("", 512, "model manifest (.json); empty = the bundled plates model")
    threads: int = bounded(2, 1, 8, "interpreter threads")
    score_threshold: float = bounded(
        0.35, 0.0, 0.99, "minimum plate score; 0 = the threshold in the model's manifest"
    )
    enabled: bool = flag(True, "run the plate detector on the detection stream")
    zoom_window: tuple[Point, ...] = points(
        2,
        2,
        "a second pass on this main-stream rectangle [[x0, y0], [x1, y1]] at full resolution, "
        "for far plates (e.g. at the stop line); empty = none",
    )
    area: tuple[Point, ...] = points(
        2,
        2,
        "the lores pass covers only this main-stream rectangle [[x0, y0], [x1, y1]] (the road "
        "nearer than the zoom window's far edge); empty = the whole frame",
    )


@dataclass(frozen=True)
class TrackerConfig:
    """Plate tracking across frames (ByteTrack-style, constant-velocity Kalman filter)."""

    high_score: float = bounded(0.5, 0.05, 0.99, "detections at least this sure are matched first")
    low_score: float = bounded(0.1, 0.0, 0.99, "weaker detections extend tracks, start none")
    match_iou: float = bounded(0.2, 0.01, 0.95, "least IoU with a predicted box, first stage")
    low_match_iou: float = bounded(0.4, 0.01, 0.95, "least IoU for a weak detection")
    centre_gate: float = bounded(
        2.0, 0.1, 20.0, "fallback when IoU is 0: centre distance in plate sizes"
    )
    max_missed: int = bounded(10, 0, 300, "frames a track survives without a detection")
    min_hits: int = bounded(3, 1, 30, "frames a new track needs to be confirmed")
    history: int = bounded(64, 4, 1024, "observations kept per track")
    max_tracks: int = bounded(200, 1, 2000, "tracks at most; further new plates are not tracked")


@dataclass(frozen=True)
class LaneConfig:
    """One lane of `[[zones.lanes]]`."""

    name: str = text("", 32, "lane name (goes into evidence)", ID_PATTERN, required=True)
    polygon: tuple[Point, ...] = points(3, 64, "the lane's outline, [x, y] points", True)
    direction: tuple[float, float] = vector(
        (0.0, -1.0), "allowed direction of travel in the image", True
    )
    speed_limit_kmh: float = bounded(50.0, 5.0, 200.0, "speed limit in the lane")


@dataclass(frozen=True)
class SpeedTrapConfig:
    """Two lines a known road distance apart (`[zones.speed_trap]`)."""

    line_a: tuple[Point, ...] = points(2, 2, "first line, two [x, y] points")
    line_b: tuple[Point, ...] = points(2, 2, "second line, two [x, y] points")
    distance_m: float = bounded(0.0, 0.0, 500.0, "road distance between the lines; 0 = no trap")


@dataclass(frozen=True)
class ZonesConfig:
    """Where things are on the image, in main-stream pixels (plate plane, see the docs)."""

    stop_line: tuple[Point, ...] = points(2, 2, "the stop line, two [x, y] points")
    lanes: tuple[LaneConfig, ...] = tables("lanes", 16, "the lanes, `[[zones.lanes]]` tables")
    solid_lines: tuple[tuple[Point, ...], ...] = polylines(32, "lines that may not be crossed")
    homography_points: tuple[Point, ...] = points(4, 4, "4 image points on the road")
    homography_world_m: tuple[Point, ...] = points(4, 4, "the same 4 points on the road, metres")
    speed_trap: SpeedTrapConfig = field(default_factory=SpeedTrapConfig)


@dataclass(frozen=True)
class SignalConfig:
    """Where the traffic-signal phase comes from."""

    source: str = choice("none", ("none", "frame", "serial", "gpio", "plan"), "phase source")
    stale_after_s: float = bounded(2.0, 0.2, 60.0, "no update for this long = phase unknown")
    serial_url: str = text("", 256, "serial port or pyserial URL (/dev/ttyUSB0, rfc2217://...)")
    serial_baud: int = bounded(9600, 300, 921_600, "serial speed, bits per second")
    serial_group: str = text("1", 16, "signal group id this camera follows", r"[A-Za-z0-9_-]+")
    max_future_s: float = bounded(2.0, 0.0, 60.0, "lines stamped further ahead are refused")
    max_age_s: float = bounded(5.0, 0.1, 600.0, "lines stamped older than this are refused")
    reconnect_max_s: float = bounded(30.0, 1.0, 600.0, "longest wait between serial reconnects")
    gpio_backend: str = choice("gpiod", ("gpiod", "sysfs"), "how GPIO lines are read")
    gpio_chip: str = text("/dev/gpiochip0", 128, "GPIO chip (gpiod backend)")
    gpio_red_line: int = bounded(-1, -1, 1023, "line wired to the red lamp; -1 = none")
    gpio_amber_line: int = bounded(-1, -1, 1023, "line wired to the amber lamp; -1 = none")
    gpio_active_low: bool = flag(False, "a lit lamp reads low")
    plan_green_s: float = bounded(30.0, 1.0, 600.0, "fixed-time plan: green seconds")
    plan_amber_s: float = bounded(3.0, 0.0, 60.0, "fixed-time plan: amber seconds")
    plan_red_s: float = bounded(30.0, 1.0, 600.0, "fixed-time plan: red seconds")
    plan_offset_s: float = bounded(0.0, 0.0, 86_400.0, "plan cycle start after UTC midnight")


@dataclass(frozen=True)
class RedLightConfig:
    """`[rules.red_light]`: crossing the stop line on red."""

    enabled: bool = flag(True, "check this rule")
    grace_s: float = bounded(0.5, 0.0, 10.0, "red for less than this at the crossing: no offence")
    amber_is_violation: bool = flag(False, "crossing on amber is an offence too")
    min_frames: int = bounded(2, 1, 30, "frames the plate is seen on each side of the line")


@dataclass(frozen=True)
class SolidLineConfig:
    """`[rules.solid_line]`: crossing a solid lane line."""

    enabled: bool = flag(True, "check this rule")
    min_frames: int = bounded(2, 1, 30, "frames the plate is seen on each side of the line")
    margin_plate_widths: float = bounded(0.25, 0.0, 5.0, "nearer to the line = on neither side")


@dataclass(frozen=True)
class WrongWayConfig:
    """`[rules.wrong_way]`: moving against the lane's direction."""

    enabled: bool = flag(True, "check this rule")
    min_distance_m: float = bounded(5.0, 0.5, 200.0, "distance travelled the wrong way")
    min_frames: int = bounded(5, 2, 300, "frames the plate is seen in the lane")
    allow_pixels: bool = flag(False, "without a homography, measure in pixels")
    min_distance_px: float = bounded(150.0, 5.0, 5000.0, "distance when measured in pixels")


@dataclass(frozen=True)
class SpeedingConfig:
    """`[rules.speeding]`: faster than the lane's limit."""

    enabled: bool = flag(True, "check this rule")
    method: str = choice("auto", ("auto", "trap", "homography"), "auto = the trap if set")
    tolerance_kmh: float = bounded(5.0, 0.0, 50.0, "allowed above the limit")
    default_limit_kmh: float = bounded(50.0, 5.0, 200.0, "limit for a plate in no lane")
    window_s: float = bounded(0.6, 0.2, 10.0, "track span the homography speed is fitted over")
    min_frames: int = bounded(5, 3, 300, "observations a speed is fitted to")
    max_sigma_kmh: float = bounded(8.0, 0.5, 50.0, "less sure speeds are not acted on")
    sigma_margin: float = bounded(1.64, 0.0, 5.0, "speed less this many sigmas must be over")
    pixel_sigma: float = bounded(1.0, 0.1, 20.0, "plate position uncertainty, pixels")


@dataclass(frozen=True)
class RulesConfig:
    """Violation rules and what they share."""

    reid_window_s: float = bounded(2.0, 0.0, 30.0, "a track found again this soon is the same")
    reid_gate: float = bounded(3.0, 0.1, 50.0, "how near its prediction, in plate sizes")
    evidence_frames_before: int = bounded(20, 0, 600, "frames kept before the offence")
    evidence_frames_after: int = bounded(10, 0, 600, "frames kept after the offence")
    min_plate_size_px: float = bounded(
        9.0, 0.0, 2000.0, "no violation until a plate box was this big: sqrt(w*h), main pixels"
    )
    red_light: RedLightConfig = field(default_factory=RedLightConfig)
    solid_line: SolidLineConfig = field(default_factory=SolidLineConfig)
    wrong_way: WrongWayConfig = field(default_factory=WrongWayConfig)
    speeding: SpeedingConfig = field(default_factory=SpeedingConfig)


@dataclass(frozen=True)
class EvidenceConfig:
    """Evidence packets: what goes in, how it is compressed, signed and sealed (issue 5)."""

    node_key: str = text("", 512, "node signing key file; empty = STATE_DIR/keys/node.key")
    central_key: str = text(
        "", 512, "central's X25519 public key (base64 text or a file); empty = not sealed"
    )
    context_frames: int = bounded(3, 2, 4, "context frames: before, (approach,) at, after")
    context_width: int = bounded(960, 160, 4608, "context frames are scaled down to this width")
    context_quality: int = bounded(70, 10, 100, "JPEG quality tried first for context frames")
    context_min_quality: int = bounded(40, 10, 100, "lowest rung of the context quality ladder")
    context_max_kb: int = bounded(40, 4, 4096, "a context frame above this steps down the ladder")
    plate_quality: int = bounded(92, 10, 100, "JPEG quality tried first for the plate crop")
    plate_min_quality: int = bounded(80, 10, 100, "lowest rung of the plate quality ladder")
    plate_max_kb: int = bounded(48, 4, 4096, "a plate crop above this steps down the ladder")
    plate_margin: float = bounded(0.5, 0.0, 4.0, "plate crop margin, in plate sizes each side")
    overview: bool = flag(False, "add an annotated overview (the offence frame, plate boxed)")
    overview_width: int = bounded(640, 160, 4608, "the overview is scaled down to this width")
    overview_quality: int = bounded(60, 10, 100, "JPEG quality of the overview")


@dataclass(frozen=True)
class StoreConfig:
    """The offline packet store (issue 5): durable queue of sealed packets until acked."""

    max_mb: int = bounded(4096, 1, 1_000_000, "most the store holds on disk, all states")
    min_free_mb: int = bounded(256, 0, 1_000_000, "free disk the store always leaves")
    low_disk_mb: int = bounded(1024, 0, 1_000_000, "free disk below this is flagged low")
    keep_acked_hours: float = bounded(24.0, 0.0, 8760.0, "acked packets kept; 0 = deleted")
    remember_acked_days: float = bounded(7.0, 0.0, 365.0, "acked ids remembered (repeats ignored)")
    telemetry_fill_pct: int = bounded(70, 1, 100, "fuller than this: priority 3+ refused")
    violation_fill_pct: int = bounded(90, 1, 100, "fuller than this: priority 2 refused")


UPLINK_URL_PATTERN = r"(https?://[^\s/?#@]+(/[^\s?#@]*)?)?"  # no user:password@
_HHMM = r"[0-2][0-9]:[0-5][0-9]"
UPLINK_WINDOWS_PATTERN = rf"({_HHMM}-{_HHMM}( *, *{_HHMM}-{_HHMM})*)?"


@dataclass(frozen=True)
class UplinkConfig:
    """Delivery to the central ingest, and telemetry (issue 6, docs/uplink-protocol.md)."""

    url: str = text(
        "",
        512,
        "base URL of the central ingest (https://...); empty = uplink off",
        UPLINK_URL_PATTERN,
    )
    ca_bundle: str = text("", 512, "PEM file of the CA(s) the central's certificate must chain to")
    client_cert: str = text("", 512, "client certificate (PEM) for mutual TLS; empty = none")
    client_key: str = text("", 512, "private key (PEM) of client_cert")
    allow_plain_http: bool = flag(False, "allow an http:// url (tests, demo); status warns")
    connect_timeout_s: float = bounded(10.0, 0.5, 120.0, "TCP + TLS connect timeout")
    read_timeout_s: float = bounded(60.0, 1.0, 600.0, "longest silence while awaiting an answer")
    backoff_base_s: float = bounded(2.0, 0.05, 600.0, "first retry delay (full jitter below it)")
    backoff_max_s: float = bounded(300.0, 0.1, 3600.0, "cap of the exponential backoff")
    retry_after_max_s: float = bounded(900.0, 0.1, 86_400.0, "a server's Retry-After, capped")
    idle_poll_s: float = bounded(5.0, 0.1, 600.0, "an empty queue is looked at this often")
    max_bytes_per_s: int = bounded(0, 0, 1_000_000_000, "upload bandwidth cap; 0 = none")
    burst_bytes: int = bounded(65_536, 1024, 100_000_000, "bytes that may go at once under the cap")
    windows: str = text(
        "",
        256,
        "upload windows, local time HH:MM-HH:MM[, ...]; empty = always",
        UPLINK_WINDOWS_PATTERN,
    )
    urgent_priority: int = bounded(0, -1, 9, "packets this urgent go outside the windows too")
    heartbeat_minutes: float = bounded(15.0, 0.0, 1440.0, "a signed heartbeat this often; 0 = none")


# scrypt$<log2 N>$<r>$<p>$<salt, base64>$<key, base64> (node/console/pin.py), or empty
PIN_HASH_PATTERN = (
    r"(scrypt\$[0-9]{1,2}\$[0-9]{1,2}\$[0-9]{1,2}\$[A-Za-z0-9+/=]{16,88}\$[A-Za-z0-9+/=]{16,88})?"
)


@dataclass(frozen=True)
class ConsoleConfig:
    """The technician's serial console (issue 7, docs/console.md)."""

    baud: int = bounded(115_200, 300, 4_000_000, "serial speed, bits per second")
    pin_hash: str = text(
        "",
        256,
        "technician PIN as `roadnode console-pin` prints it (scrypt); empty = no state changes",
        PIN_HASH_PATTERN,
    )
    read_only_without_pin: bool = flag(True, "read-only commands work without the PIN")
    idle_timeout_s: float = bounded(600.0, 30.0, 86_400.0, "no input for this long: locked again")
    max_line: int = bounded(256, 32, 4096, "longest command line; longer lines are refused")
    pin_attempts: int = bounded(5, 3, 20, "wrong PINs in a row before a lockout")
    lockout_s: float = bounded(60.0, 5.0, 3600.0, "first lockout; each further one doubles")
    lockout_max_s: float = bounded(3600.0, 60.0, 86_400.0, "longest lockout")
    confirm_s: float = bounded(120.0, 30.0, 3600.0, "applied config reverts unless confirmed")
    export_dirs: str = text(
        "/media:/mnt:/run/media", 512, "colon-separated folders snapshots may be written under"
    )
    service_unit: str = text(
        "roadnode.service", 128, "systemd unit of the node service", r"[A-Za-z0-9@._-]+\.service"
    )
    reopen_max_s: float = bounded(10.0, 1.0, 300.0, "longest wait between port reopen tries")
    audit_max_kb: int = bounded(1024, 64, 65_536, "audit log size before it is rotated")


# an Ed25519 public key as text: base64 of its raw 32 bytes (node/fleet/bundle.py), or empty
FLEET_KEY = r"([A-Za-z0-9+/]{43}=)?"


@dataclass(frozen=True)
class FleetConfig:
    """Fleet updates (issue 8, docs/fleet-updates.md): signed bundles of software, model and
    config, pulled from the central or dropped into the inbox, proven healthy or rolled back."""

    key: str = text("", 64, "fleet public key (base64); empty = no bundle is trusted", FLEET_KEY)
    next_key: str = text("", 64, "a second trusted fleet key, for rotation", FLEET_KEY)
    url: str = text("", 512, "desired-state endpoint (https://...); empty = no pulling")
    poll_interval_s: float = bounded(900.0, 10.0, 86_400.0, "time between desired-state polls")
    poll_jitter_pct: int = bounded(20, 0, 50, "each interval varies by up to this much")
    timeout_s: float = bounded(30.0, 1.0, 600.0, "HTTP connect/read timeout")
    inbox: str = text("", 512, "inbox folder watched for bundles; empty = STATE_DIR/fleet/inbox")
    settle_s: float = bounded(2.0, 0.1, 600.0, "an inbox file must stay unchanged this long")
    max_bundle_mb: int = bounded(512, 1, 16_384, "largest bundle accepted (file and contents)")
    max_members: int = bounded(10_000, 1, 1_000_000, "most files in one bundle")
    min_free_mb: int = bounded(200, 0, 1_000_000, "free disk always left after an install")
    health_window_s: float = bounded(120.0, 2.0, 3600.0, "time the new version has to prove health")
    health_frames: int = bounded(10, 1, 100_000, "frames that must advance within the window")
    require_uplink: bool = flag(False, "health also needs the uplink reachable")
    restart_command: str = text(
        "systemctl restart roadnode.service", 512, "how the node service is restarted"
    )
    keep_releases: int = bounded(3, 2, 20, "releases, models and configs kept on disk per kind")


@dataclass(frozen=True)
class ReaderConfig:
    """The plate reader (issue 11, docs/reader-training.md): reads tracked plates, fuses a
    track's reads, checks the hotlist."""

    enabled: bool = flag(True, "read plates on tracks (absent model: the reader stays off)")
    model: str = text("", 512, "reader manifest (.json); empty = the bundled reader model")
    threads: int = bounded(1, 1, 4, "interpreter threads")
    every_n_frames: int = bounded(3, 1, 100, "read a track at most once per this many frames")
    min_plate_px: int = bounded(40, 8, 2000, "plates narrower than this (pixels) are not read")
    max_reads_per_track: int = bounded(12, 1, 100, "reads fused per track, then it stops reading")
    min_confidence: float = bounded(
        0.8, 0.0, 1.0, "a fused read below this is low-confidence: flagged, one-off hotlist matches"
    )
    hotlist: str = text("", 512, "hotlist file (JSON); empty = no hotlist")
    hotlist_hashed: bool = flag(False, "the hotlist holds HMAC-SHA256 digests, not plate numbers")
    hotlist_salt_file: str = text("", 512, "per-fleet HMAC key file for a hashed hotlist")
    fuzzy_hotlist: bool = flag(True, "low-confidence reads also match one character off (flagged)")


@dataclass(frozen=True)
class HealthConfig:
    """Alarm thresholds of the board's health (raise at one value, clear past the other)."""

    temp_raise_c: float = bounded(80.0, 40.0, 110.0, "SoC temperature alarm raised at")
    temp_clear_c: float = bounded(75.0, 30.0, 105.0, "and cleared below")
    throttle_hold_s: float = bounded(300.0, 0.0, 86_400.0, "throttling alarms held this long")
    disk_free_raise_mb: float = bounded(512.0, 16.0, 1e6, "disk alarm below this much free")
    disk_free_clear_mb: float = bounded(1024.0, 32.0, 1e6, "and cleared above")
    mem_available_raise_mb: float = bounded(64.0, 8.0, 1e5, "memory alarm below this available")
    mem_available_clear_mb: float = bounded(128.0, 16.0, 1e5, "and cleared above")
    rss_raise_mb: float = bounded(250.0, 50.0, 1e5, "the node's own RSS alarm raised at")
    rss_clear_mb: float = bounded(200.0, 25.0, 1e5, "and cleared below")
    clock_error_raise_s: float = bounded(1.0, 0.01, 3600.0, "clock alarm at this error bound")
    clock_error_clear_s: float = bounded(0.5, 0.005, 3600.0, "and cleared at or below")


@dataclass(frozen=True)
class ServiceConfig:
    """The running service."""

    log_level: str = choice("info", ("debug", "info", "warning", "error"))
    status_interval_s: float = bounded(5.0, 1.0, 300.0, "how often STATUS= is sent to systemd")
    stall_s: float = bounded(
        10.0, 1.0, 600.0, "no frame from the camera, or one frame stuck in a stage, this long: heal"
    )
    heal_budget: int = bounded(5, 1, 100, "self-healing actions allowed per heal_window_s")
    heal_window_s: float = bounded(600.0, 10.0, 86_400.0, "the window of heal_budget")
    detector_retry_s: float = bounded(
        60.0, 1.0, 3600.0, "a refused model is tried again this often"
    )


@dataclass(frozen=True)
class Config:
    schema_version: int = bounded(SCHEMA_VERSION, 1, SCHEMA_VERSION)
    node: NodeConfig = field(default_factory=NodeConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    ring: RingConfig = field(default_factory=RingConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    zones: ZonesConfig = field(default_factory=ZonesConfig)
    signal: SignalConfig = field(default_factory=SignalConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    uplink: UplinkConfig = field(default_factory=UplinkConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
