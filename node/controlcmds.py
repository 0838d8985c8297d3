"""Control-socket commands beyond `status` and `ping`, answered by the running service.

`HANDLERS[cmd](service, request) -> reply`. The service's control handler delegates every
command it does not answer itself to this table; a command missing here is answered
`unknown command`, which the console shows as "not reported by the service in this build".
Each handler reads what the service already has (the frame ring, the detector's recent
results) and never invents data: a subsystem that is absent is said to be absent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from node.capture.frame import Frame
    from node.service import Service

Reply = dict[str, Any]
SNAPSHOT_DIR = "snapshots"
SNAPSHOT_NAME = "latest.jpg"
MAX_DETECTIONS = 100


def _latest(service: Service) -> Frame | None:
    frame: Frame | None = service.pipeline.ring.latest()
    return frame


def _age_s(frame: Frame) -> float:
    return round((time.monotonic_ns() - frame.mono_ns) / 1e9, 3)


def _no_frame() -> Reply:
    return {"ok": False, "error": "no frame in the ring yet (camera starting or stalled)"}


def camera(service: Service, _request: Reply) -> Reply:
    """Frame rate, the latest frame's exposure metadata, brightness and sharpness."""
    from node.console.preview import brightness, sharpness

    frame = _latest(service)
    out: Reply = {
        "ok": True,
        "source": service.source.url,
        "fps": round(service.pipeline.fps(), 2),
        "fps_asked": service.cfg.capture.fps,
        "source_stats": service.source.stats(),
    }
    if frame is None:
        return out | {"frame": None}
    mh, mw, _ = frame.main.shape
    lh, lw = frame.lores.shape[:2]
    out["frame"] = {
        "seq": frame.seq,
        "age_s": _age_s(frame),
        "main": [mw, mh],
        "lores": [lw, lh],
        "meta": {k: v for k, v in frame.meta.items() if isinstance(v, (int, float, str))},
        "brightness": round(brightness(frame.lores), 1),
        "sharpness": round(sharpness(frame.lores), 1),
    }
    return out


def snapshot(service: Service, _request: Reply) -> Reply:
    """The latest full-resolution frame as a JPEG in `<state_dir>/snapshots/latest.jpg`."""
    from node.console.preview import encode_jpeg, sharpness

    frame = _latest(service)
    if frame is None:
        return _no_frame()
    image = frame.main.array()
    data = encode_jpeg(image, 90)
    folder = service.opts.state_dir / SNAPSHOT_DIR
    folder.mkdir(mode=0o750, exist_ok=True)
    path = folder / SNAPSHOT_NAME
    _write_atomic(path, data)
    h, w = image.shape[:2]
    return {
        "ok": True,
        "path": str(path),
        "bytes": len(data),
        "width": w,
        "height": h,
        "seq": frame.seq,
        "utc_ns": frame.utc_ns,
        "age_s": _age_s(frame),
        "sharpness": round(sharpness(image), 1),
    }


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _detector_absent(service: Service) -> Reply | None:
    if service.detector is None:
        return {"ok": True, "available": False, "detector": service.detector_status()}
    return None


def _bad_count(n: object) -> Reply | None:
    """The error answer for a request's `n` that is not a whole number 1..MAX_DETECTIONS."""
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_DETECTIONS:
        return {"ok": False, "error": f"n: must be a whole number 1..{MAX_DETECTIONS}, got {n!r}"}
    return None


def detections(service: Service, request: Reply) -> Reply:
    """The last `n` frames that had plates: seq, age, boxes (main pixels), scores. No text."""
    n = request.get("n", 10)
    if (bad := _bad_count(n)) is not None:
        return bad
    if (absent := _detector_absent(service)) is not None:
        return absent
    assert service.detector is not None
    now = time.monotonic_ns()
    recent = service.detector.recent()
    with_plates = [r for r in recent if r.detections][-n:]
    return {
        "ok": True,
        "available": True,
        "frames_kept": len(recent),
        "detections": [
            {
                "seq": r.seq,
                "age_s": round((now - r.mono_ns) / 1e9, 2),
                "plates": [
                    {"box": [round(v, 1) for v in d.box], "score": round(d.score, 3)}
                    for d in r.detections
                ],
            }
            for r in with_plates
        ],
    }


def aim(service: Service, _request: Reply) -> Reply:
    """The plates of the newest detected frame: size in pixels, score and crop sharpness."""
    from node.capture.frame import KeptRef
    from node.console.preview import sharpness

    frame = _latest(service)
    out: Reply = {"ok": True}
    if frame is not None:
        out["frame"] = {"seq": frame.seq, "sharpness": round(sharpness(frame.lores), 1)}
    if (absent := _detector_absent(service)) is not None:
        return out | absent
    assert service.detector is not None
    recent = service.detector.recent()
    out["available"] = True
    if not recent:
        return out | {"plates": [], "seq": None}
    last = recent[-1]
    match = service.pipeline.ring.window(last.mono_ns, last.mono_ns)
    main = match[0].main if match else None
    # the camera's own pixels only: a slimmed frame keeps them around its plates
    kept = main if isinstance(main, KeptRef) else None
    image = main.array() if main is not None and kept is None else None
    plates = []
    for d in last.detections:
        x0, y0, x1, y1 = d.box
        plate: Reply = {"w": round(x1 - x0), "h": round(y1 - y0), "score": round(d.score, 3)}
        if main is not None:
            ih, iw = main.shape[:2]
            cx0, cy0 = max(0, int(x0)), max(0, int(y0))
            cx1, cy1 = min(iw, int(x1 + 0.5)), min(ih, int(y1 + 0.5))
            if cx1 - cx0 >= 3 and cy1 - cy0 >= 3:
                if kept is not None:
                    pixels = kept.region((cx0, cy0, cx1, cy1))
                else:
                    assert image is not None
                    pixels = image[cy0:cy1, cx0:cx1]
                if pixels is not None:
                    plate["sharpness"] = round(sharpness(pixels), 1)
        plates.append(plate)
    age = round((time.monotonic_ns() - last.mono_ns) / 1e9, 2)
    return out | {"seq": last.seq, "age_s": age, "plates": plates}


def _rules(service: Service) -> tuple[Any, Reply | None]:
    """The violation stage, or the reply saying why there is none."""
    rules = getattr(service, "rules", None)
    if rules is not None:
        return rules, None
    status = getattr(service, "rules_status", None)
    why = status() if callable(status) else {"state": "absent", "error": "not in this build"}
    return None, {"ok": True, "available": False, "rules": why}


def violations(service: Service, request: Reply) -> Reply:
    """Counts per rule and the last `n` violations: rule, age, confidence, measured figures.
    No plate boxes, no images: the console needs no more personal data than that."""
    n = request.get("n", 10)
    if (bad := _bad_count(n)) is not None:
        return bad
    rules, absent = _rules(service)
    if absent is not None:
        return absent
    status = rules.rules.status()
    now = time.monotonic_ns()
    last = [
        {
            "id": v.id,
            "rule": v.rule,
            "age_s": round((now - v.mono_ns) / 1e9, 1),
            "confidence": round(v.confidence, 2),
            "measured": {
                k: (round(x, 2) if isinstance(x, float) else x)
                for k, x in dataclasses.asdict(v.measured).items()
                if x is not None
            },
        }
        for v in rules.last(n)
    ]
    active = {k: v for k, v in status.items() if isinstance(v, str)}
    return {
        "ok": True,
        "available": True,
        "total": rules.found,
        "per_rule": status.get("violations", {}),
        "rules": active,
        "last": last,
    }


def _iso_utc(utc_ns: int) -> str:
    """ISO 8601 UTC with milliseconds, as in the packets: 2026-03-01T07:15:02.125Z."""
    t = dt.datetime.fromtimestamp(utc_ns // 1_000_000_000, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{utc_ns % 1_000_000_000 // 1_000_000:03d}Z"


def alerts(service: Service, request: Reply) -> Reply:
    """The last `n` hotlist hits, newest first: age, UTC time, track, the entry's reason code,
    exact or fuzzy match, the read's confidence. No plate text, no images: like `violations`,
    the console is a technician's tool; the central gets the plate in the alert packet."""
    n = request.get("n", 10)
    if (bad := _bad_count(n)) is not None:
        return bad
    rules, absent = _rules(service)
    if absent is not None:
        return absent
    now = time.monotonic_ns()
    reader = getattr(rules, "reader", None)
    return {
        "ok": True,
        "available": True,
        "total": rules.alerts_found,
        "reading": reader is not None,
        "hotlist": getattr(reader, "hotlist", None) is not None,
        "alerts": [
            {
                "age_s": round((now - a.mono_ns) / 1e9, 1),
                "utc": _iso_utc(a.utc_ns),
                "track": a.track_id,
                "reason": a.reason,
                "match": a.match,
                "confidence": round(a.confidence, 2),
            }
            for a in rules.alerts(n)
        ],
    }


def signal(service: Service, _request: Reply) -> Reply:
    """The signal phase now, how long it has been on, and how old the information is."""
    rules, absent = _rules(service)
    if absent is not None:
        return absent
    state = rules.signal.current(time.monotonic_ns())

    def finite(x: float) -> float | None:
        return round(x, 2) if math.isfinite(x) else None

    return {
        "ok": True,
        "available": True,
        "phase": state.phase,
        "phase_age_s": finite(state.phase_age_s),
        "info_age_s": finite(state.info_age_s),
        "stale": state.stale,
        "source": state.source,
        "reason": state.reason,
        "stats": rules.signal.stats(),
    }


def uplink(service: Service, _request: Reply) -> Reply:
    """The uploader's state: link, counts, last success and error (secrets never included)."""
    st = service.uplink_status()
    return {"ok": True, "available": st["state"] == "running", **st}


def upload_now(service: Service, _request: Reply) -> Reply:
    """Wake the uploader: it tries the queue now instead of at its next poll or backoff."""
    if service.uploader is None:
        return {
            "ok": False,
            "error": f"uplink {service.uplink_status()['state']}: "
            f"{service.uplink_status().get('error', '')}",
        }
    service.uploader.upload_now()
    return {"ok": True, "link": service.uploader.status()["state"]}


HANDLERS: dict[str, Callable[[Service, Reply], Reply]] = {
    "uplink": uplink,
    "upload_now": upload_now,
    "violations": violations,
    "alerts": alerts,
    "signal": signal,
    "camera": camera,
    "snapshot": snapshot,
    "detections": detections,
    "aim": aim,
}
