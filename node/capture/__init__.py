"""Frame sources, chosen by URL like pyserial's `serial_for_url`.

- `picam://0`                    the Pi camera through picamera2 (main + lores streams)
- `replay://PATH?fps=10&loop=1`  an image folder (natural order) or an MJPEG file
- `sim://junction?seed=N`        a synthetic junction with ground truth
"""

from __future__ import annotations

from urllib.parse import urlsplit

from node.capture.frame import CaptureError, Frame, FrameSource
from node.config import CaptureConfig

__all__ = ["CaptureError", "Frame", "FrameSource", "open_source"]

SCHEMES = ("picam", "replay", "sim")


def open_source(url: str, cfg: CaptureConfig) -> FrameSource:
    """Build (not yet open) the frame source that `url` names."""
    scheme = urlsplit(url).scheme
    if scheme == "picam":
        from node.capture.picam import PicamSource

        return PicamSource(url, cfg)
    if scheme == "replay":
        from node.capture.replay import ReplaySource

        return ReplaySource(url, cfg)
    if scheme == "sim":
        from node.capture.sim import SimSource

        return SimSource(url, cfg)
    raise CaptureError(f"{url}: unknown source scheme {scheme!r} (use {', '.join(SCHEMES)})")
