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


def text(default: str, max_len: int = 256, doc: str = "", pattern: str | None = None) -> Any:
    """A free string field (bounded length, optional regex it must match in full)."""
    return field(default=default, metadata={"max_len": max_len, "pattern": pattern, "doc": doc})


def flag(default: bool, doc: str = "") -> Any:
    """A true/false field."""
    return field(default=default, metadata={"doc": doc})


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


@dataclass(frozen=True)
class ServiceConfig:
    """The running service."""

    log_level: str = choice("info", ("debug", "info", "warning", "error"))
    status_interval_s: float = bounded(5.0, 1.0, 300.0, "how often STATUS= is sent to systemd")


@dataclass(frozen=True)
class Config:
    schema_version: int = bounded(SCHEMA_VERSION, 1, SCHEMA_VERSION)
    node: NodeConfig = field(default_factory=NodeConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    ring: RingConfig = field(default_factory=RingConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
