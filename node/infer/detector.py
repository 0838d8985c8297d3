"""The plate detector: image → letterbox → TFLite → decode → NMS → boxes in the image's pixels.

`PlateDetector` owns one loaded model at a time. `reload()` builds the new model completely
before swapping it in, so a refused model (bad hash, wrong shape, not loadable) leaves the
previous one running. `DetectorStage` runs it in the pipeline on each frame's detection stream
and keeps the last results, in main-stream pixels, for status.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from node.capture.frame import Frame, Image
from node.config import DetectorConfig, Point
from node.infer.decode import decode, nms
from node.infer.letterbox import Letterbox, Placement, input_table
from node.infer.manifest import DEFAULT_MANIFEST, ModelManifest, load_model
from node.infer.runtime import Backend, Interpreter, ModelIO, default_backend

TOP_K = 100  # peaks decoded per image, before NMS


@dataclass(frozen=True, slots=True)
class Detection:
    """A plate: its box (x0, y0, x1, y1) in the pixels of the image it was found in, and score."""

    box: tuple[float, float, float, float]
    score: float

    def scaled(self, sx: float, sy: float) -> Detection:
        x0, y0, x1, y1 = self.box
        return Detection((x0 * sx, y0 * sy, x1 * sx, y1 * sy), self.score)


@dataclass(frozen=True)
class Timing:
    """Milliseconds spent on the last image: letterbox, interpreter, decode + NMS + mapping."""

    pre_ms: float = 0.0
    invoke_ms: float = 0.0
    post_ms: float = 0.0


@dataclass(frozen=True)
class LoadedModel:
    interpreter: Interpreter
    manifest: ModelManifest
    io: ModelIO
    letterbox: Letterbox


def read_image(path: Path) -> Image:
    """An image file as RGB uint8 (H, W, 3); OSError (also for undecodable files) naming it."""
    try:
        with PILImage.open(path) as pil:
            return np.asarray(pil.convert("RGB"))
    except UnidentifiedImageError:
        raise OSError(f"{path}: not an image Pillow can read") from None
    except OSError as e:
        raise OSError(f"{path}: {e.strerror or e}") from None
    except (ValueError, SyntaxError) as e:  # truncated or corrupt data
        raise OSError(f"{path}: cannot decode image: {e}") from None


class PlateDetector:
    """Finds plates in RGB images with the model a manifest names."""

    def __init__(
        self,
        manifest_path: Path | str = DEFAULT_MANIFEST,
        threads: int = 2,
        threshold: float | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.threads = threads
        self.threshold_override = threshold  # None: the manifest's score_threshold
        self._backend = backend or default_backend()
        self._lock = threading.Lock()
        self._model = self._load(Path(manifest_path))
        self.timing = Timing()

    @classmethod
    def from_config(cls, cfg: DetectorConfig, backend: Backend | None = None) -> PlateDetector:
        return cls(
            Path(cfg.model) if cfg.model else DEFAULT_MANIFEST,
            cfg.threads,
            cfg.score_threshold or None,
            backend,
        )

    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def manifest(self) -> ModelManifest:
        return self._model.manifest

    @property
    def threshold(self) -> float:
        if self.threshold_override is not None:
            return self.threshold_override
        return self._model.manifest.score_threshold

    def _load(self, manifest_path: Path) -> LoadedModel:
        interpreter, manifest = load_model(manifest_path, self.threads, self._backend)
        io = ModelIO.read(interpreter, manifest.model_path)
        table = input_table(
            io.input.dtype, io.input.scale, io.input.zero_point, manifest.input_range
        )
        letterbox = Letterbox(manifest.input_width, manifest.input_height, table)
        return LoadedModel(interpreter, manifest, io, letterbox)

    def reload(self, manifest_path: Path | str) -> ModelManifest:
        """Switch to another model; on ModelError the current one stays in use."""
        model = self._load(Path(manifest_path))
        with self._lock:
            self._model = model
        return model.manifest

    def detect(
        self,
        image: Image,
        threshold: float | None = None,
        pyramid: tuple[float, ...] | None = None,
    ) -> list[Detection]:
        """Plates in `image` (RGB uint8, HxWx3), best first, boxes in the image's pixels.

        `pyramid`: the levels to run (default: the manifest's); one invoke per level, the
        results merged by NMS."""
        pre = invoke = post = 0.0
        with self._lock:
            m = self._model
            limit = self.threshold if threshold is None else threshold
            found: list[Detection] = []
            for shrink in pyramid or m.manifest.pyramid:
                t0 = time.perf_counter()
                placement = m.letterbox.place(image, shrink)
                t1 = time.perf_counter()
                m.interpreter.set_tensor(m.io.input.index, m.letterbox.buffer)
                m.interpreter.invoke()
                heat = m.io.heat.dequantize(m.interpreter.get_tensor(m.io.heat.index))
                box = m.io.box.dequantize(m.interpreter.get_tensor(m.io.box.index))
                t2 = time.perf_counter()
                found += self._decode(m.manifest, heat, box, placement, limit)
                t3 = time.perf_counter()
                pre, invoke, post = pre + t1 - t0, invoke + t2 - t1, post + t3 - t2
            t3 = time.perf_counter()
            if len(m.manifest.pyramid if pyramid is None else pyramid) > 1:
                found = self._merge(found, m.manifest)
            post += time.perf_counter() - t3
        self.timing = Timing(pre * 1e3, invoke * 1e3, post * 1e3)
        return found

    @staticmethod
    def _merge(found: list[Detection], manifest: ModelManifest) -> list[Detection]:
        """One list from several pyramid levels: NMS across levels, best first."""
        if not found:
            return found
        boxes = np.array([d.box for d in found], dtype=np.float32)
        scores = np.array([d.score for d in found], dtype=np.float32)
        keep = nms(boxes, scores, manifest.nms_iou)[: manifest.max_detections]
        return [found[int(k)] for k in keep]

    @staticmethod
    def _decode(
        manifest: ModelManifest,
        heat: npt.NDArray[np.float32],
        box: npt.NDArray[np.float32],
        placement: Placement,
        threshold: float,
    ) -> list[Detection]:
        boxes, scores = decode(heat, box, threshold, manifest.stride, TOP_K)
        keep = nms(boxes, scores, manifest.nms_iou)[: manifest.max_detections]
        boxes, scores = placement.to_image(boxes[keep]), scores[keep]
        real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # not all padding
        return [
            Detection((float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(s))
            for b, s in zip(boxes[real], scores[real], strict=True)
        ]


@dataclass(frozen=True)
class FrameDetections:
    """The plates found in one frame, boxes in main-stream pixels."""

    seq: int
    mono_ns: int
    detections: tuple[Detection, ...]


class DetectorStage:
    """Pipeline stage: detect on `frame.lores`, keep the results mapped to main-stream pixels.

    With a zoom window, a second pass runs on that rectangle of the main stream at full
    resolution (plates far down the road are a few pixels in the lores), and the two passes
    are merged by NMS."""

    name = "detector"

    def __init__(
        self,
        detector: PlateDetector,
        keep: int = 64,
        zoom_window: tuple[int, int, int, int] | None = None,
    ) -> None:
        self.detector = detector
        self.zoom_window = zoom_window
        self.frames = 0
        self.plates = 0
        self._recent: deque[FrameDetections] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._last_main: tuple[int, Image] | None = None  # (seq, main image) of the zoom pass

    def main_for(self, frame: Frame) -> Image:
        """The frame's main image: the one the zoom pass already fetched, else fetched now."""
        last = self._last_main
        return last[1] if last is not None and last[0] == frame.seq else frame.main.array()

    def done_with(self, seq: int) -> None:
        """The stages are done with frame `seq`: let its main image go (a camera's is 6 MB,
        and the frame ring keeps only what evidence needs of it)."""
        last = self._last_main
        if last is not None and last[0] <= seq:
            self._last_main = None

    def process(self, frame: Frame) -> None:
        sx, sy = frame.lores_to_main
        first_level = (1.0,)  # one pass at full scale: plates on the road are small
        found = [d.scaled(sx, sy) for d in self.detector.detect(frame.lores, None, first_level)]
        if self.zoom_window is not None:
            found = self._merge(found + self._zoom(frame))
        with self._lock:
            self._recent.append(FrameDetections(frame.seq, frame.mono_ns, tuple(found)))
            self.frames += 1
            self.plates += len(found)

    def _zoom(self, frame: Frame) -> list[Detection]:
        assert self.zoom_window is not None
        x0, y0, x1, y1 = self.zoom_window
        h, w = frame.main.shape[:2]
        x0, x1, y0, y1 = max(0, x0), min(w, x1), max(0, y0), min(h, y1)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return []
        main = frame.main.array()
        self._last_main = (frame.seq, main)  # the reader crops plates from it (same thread)
        crop = np.ascontiguousarray(main[y0:y1, x0:x1])
        return [
            Detection((b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0), d.score)
            for d in self.detector.detect(crop, None, (1.0,))
            for b in (d.box,)
        ]

    def _merge(self, found: list[Detection]) -> list[Detection]:
        return PlateDetector._merge(sorted(found, key=lambda d: -d.score), self.detector.manifest)

    def result(self, seq: int) -> FrameDetections | None:
        """The plates found in frame `seq`, if it was processed and is still remembered."""
        with self._lock:
            for found in reversed(self._recent):
                if found.seq == seq:
                    return found
                if found.seq < seq:
                    break
        return None

    def recent(self) -> list[FrameDetections]:
        """The last results, oldest first."""
        with self._lock:
            return list(self._recent)

    def stats(self) -> dict[str, float | int | str]:
        d = self.detector
        t = d.timing
        with self._lock:
            last = len(self._recent[-1].detections) if self._recent else 0
        return {
            "model": d.manifest.label,
            "backend": d.backend,
            "threshold": d.threshold,
            "frames": self.frames,
            "plates": self.plates,
            "last_plates": last,
            "pre_ms": round(t.pre_ms, 2),
            "invoke_ms": round(t.invoke_ms, 2),
            "post_ms": round(t.post_ms, 2),
        }


def build_stage(
    cfg: DetectorConfig,
    backend: Backend | None = None,
    zoom_window: tuple[Point, ...] = (),
) -> DetectorStage | None:
    """The detector stage the config asks for (None when disabled); ModelError if refused.
    `zoom_window` stands in for `cfg.zoom_window` when that is not set."""
    if not cfg.enabled:
        return None
    window = cfg.zoom_window or zoom_window
    box = None
    if window:
        (ax, ay), (bx, by) = window
        box = (round(min(ax, bx)), round(min(ay, by)), round(max(ax, bx)), round(max(ay, by)))
    return DetectorStage(PlateDetector.from_config(cfg, backend), zoom_window=box)
