"""The plate detector: image → letterbox → TFLite → decode → NMS → boxes in the image's pixels.

`PlateDetector` owns one loaded model at a time. `reload()` builds the new model completely
before swapping it in, so a refused model (bad hash, wrong shape, not loadable) leaves the
previous one running. `DetectorStage` runs it in the pipeline on each frame's detection stream
and keeps the last results, in main-stream pixels, for status.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from node.capture.frame import Frame, Image
from node.config import DetectorConfig, Point
from node.infer.decode import decode, nms, over_smaller
from node.infer.letterbox import Letterbox, Placement, check_image, input_table
from node.infer.manifest import (
    DEFAULT_MANIFEST,
    ModelManifest,
    open_at,
    read_manifest,
    read_model_bytes,
)
from node.infer.runtime import Backend, Interpreter, ModelError, ModelIO, default_backend

log = logging.getLogger(__name__)

TOP_K = 100  # peaks decoded per image, before NMS
MAX_RUNNERS = 6  # input sizes a resizable model is kept open at (the live stage uses two)
Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) in main-stream pixels
SAME_PLATE = 0.5  # a lores box sharing this much of the smaller box with a zoom box: one plate


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
class Runner:
    """The model opened at one input size: interpreter, tensors, input buffer."""

    interpreter: Interpreter
    io: ModelIO
    letterbox: Letterbox


@dataclass(frozen=True)
class LoadedModel:
    manifest: ModelManifest
    content: bytes  # the verified model bytes, to open the model at another input size
    runners: OrderedDict[tuple[int, int], Runner]  # by input (width, height), newest used last


def input_size(
    manifest: ModelManifest, width: int, height: int, shrink: float = 1.0
) -> tuple[int, int]:
    """The input a width x height image runs at: the manifest's size, or for a resizable model
    (`size_multiple`) the size the image is placed at in it (as large as fits, same aspect,
    times `shrink`), rounded up to the multiple: the padding a fixed input would need is cut
    off, and the placed image is the same."""
    w, h, step = manifest.input_width, manifest.input_height, manifest.size_multiple
    if not step:
        return (w, h)
    scale = min(w / width, h / height) * shrink
    return (
        min(w, max(step, math.ceil(width * scale / step) * step)),
        min(h, max(step, math.ceil(height * scale / step) * step)),
    )


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
        """The model the manifest names, verified and opened at its input size; a resizable
        one also at half that size (a model that claims to resize but does not is refused
        here, not at the first frame)."""
        manifest = read_manifest(manifest_path)
        model = LoadedModel(manifest, read_model_bytes(manifest), OrderedDict())
        w, h = manifest.input_width, manifest.input_height
        self._runner(model, (w, h))
        if manifest.size_multiple:
            self._runner(model, input_size(manifest, w, h, 0.5))
        return model

    def _runner(self, model: LoadedModel, size: tuple[int, int]) -> Runner:
        """The model opened at input `size`, opened on first use (ModelError if it cannot).
        At most `MAX_RUNNERS` sizes stay open (a few MB of tensors each): the one least
        recently used goes first, never the manifest's own size."""
        runners = model.runners
        runner = runners.get(size)
        if runner is None:
            m = model.manifest
            interpreter, io = open_at(model.content, m, size, self.threads, self._backend)
            table = input_table(io.input.dtype, io.input.scale, io.input.zero_point, m.input_range)
            runner = runners[size] = Runner(interpreter, io, Letterbox(*size, table))
            full = (m.input_width, m.input_height)
            while len(runners) > MAX_RUNNERS:
                del runners[next(k for k in runners if k != full)]
        runners.move_to_end(size)
        return runner

    def _runner_for(self, model: LoadedModel, size: tuple[int, int]) -> Runner:
        """`_runner`, falling back to the manifest's size (the image padded as a fixed-size
        model needs) if the model, checked at load, still fails to open at `size`."""
        try:
            return self._runner(model, size)
        except ModelError as e:
            m = model.manifest
            log.warning("plate model: %s; running it at %dx%d", e, m.input_width, m.input_height)
            fallback = model.runners[(m.input_width, m.input_height)]
            model.runners[size] = fallback
            return fallback

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
            full = (m.manifest.input_width, m.manifest.input_height)
            check_image(image)
            ih, iw = image.shape[:2]
            for shrink in pyramid or m.manifest.pyramid:
                t0 = time.perf_counter()
                r = self._runner_for(m, input_size(m.manifest, iw, ih, shrink))
                # place the image at the size it has in the full input at this level
                own = min(r.letterbox.width / iw, r.letterbox.height / ih)
                placement = r.letterbox.place(image, min(full[0] / iw, full[1] / ih) * shrink / own)
                t1 = time.perf_counter()
                r.interpreter.set_tensor(r.io.input.index, r.letterbox.buffer)
                r.interpreter.invoke()
                heat = r.io.heat.dequantize(r.interpreter.get_tensor(r.io.heat.index))
                box = r.io.box.dequantize(r.interpreter.get_tensor(r.io.box.index))
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

    `area` (main-stream pixels) limits the lores pass to that rectangle of the frame: the road,
    not the sky or the far road where plates are a few pixels in the lores. With a zoom window,
    a second pass runs on that rectangle of the main stream at full resolution (plates far down
    the road), and the two passes are merged by NMS. With a resizable model each pass runs at
    its own image's size (the lores band, the window) rather than padded to the full input."""

    name = "detector"

    def __init__(
        self,
        detector: PlateDetector,
        keep: int = 64,
        zoom_window: Box | None = None,
        area: Box | None = None,
    ) -> None:
        self.detector = detector
        self.zoom_window = zoom_window
        self.area = area
        self.frames = 0
        self.plates = 0
        self.passes: tuple[Timing, ...] = ()  # the last frame's passes: lores, then zoom
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
        lores = self._lores(frame)
        passes = [self.detector.timing] if lores is not None else []
        zoom = self._zoom(frame)
        if zoom is not None:
            passes.append(self.detector.timing)
        if lores is None or zoom is None:
            found = lores or zoom or []
        else:
            found = self._merge(self._coarse_only(lores, zoom) + zoom)
        with self._lock:
            self._recent.append(FrameDetections(frame.seq, frame.mono_ns, tuple(found)))
            self.frames += 1
            self.plates += len(found)
            self.passes = tuple(passes)

    def _lores(self, frame: Frame) -> list[Detection] | None:
        """The lores pass, over `area` (all of the lores image without one); None when the
        area is not inside the frame."""
        sx, sy = frame.lores_to_main
        lores, ox, oy = frame.lores, 0, 0
        if self.area is not None:
            lh, lw = lores.shape[:2]
            x0, y0, x1, y1 = self.area
            ox, oy = max(0, math.floor(x0 / sx)), max(0, math.floor(y0 / sy))
            ex, ey = min(lw, math.ceil(x1 / sx)), min(lh, math.ceil(y1 / sy))
            if ex - ox < 8 or ey - oy < 8:
                return None
            lores = lores[oy:ey, ox:ex]
        one = (1.0,)  # one pass at full scale: plates on the road are small
        return [
            Detection(((x0 + ox) * sx, (y0 + oy) * sy, (x1 + ox) * sx, (y1 + oy) * sy), d.score)
            for d in self.detector.detect(lores, None, one)
            for x0, y0, x1, y1 in (d.box,)
        ]

    def _zoom(self, frame: Frame) -> list[Detection] | None:
        """The zoom pass (None without a window, or when it is not inside the frame)."""
        if self.zoom_window is None:
            return None
        x0, y0, x1, y1 = self.zoom_window
        h, w = frame.main.shape[:2]
        x0, x1, y0, y1 = max(0, x0), min(w, x1), max(0, y0), min(h, y1)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        main = frame.main.array()
        self._last_main = (frame.seq, main)  # the reader crops plates from it (same thread)
        crop = np.ascontiguousarray(main[y0:y1, x0:x1])
        return [
            Detection((b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0), d.score)
            for d in self.detector.detect(crop, None, (1.0,))
            for b in (d.box,)
        ]

    def _coarse_only(self, lores: list[Detection], zoom: list[Detection]) -> list[Detection]:
        """The lores detections the zoom pass did not see better: one wholly inside the zoom
        window that shares at least `SAME_PLATE` of its smaller box with a zoom detection is
        the same plate at a quarter of the pixels, often boxed looser than the NMS overlap
        can tell (two boxes for one plate: two tracks)."""
        assert self.zoom_window is not None
        if not lores or not zoom:
            return lores
        wx0, wy0, wx1, wy1 = self.zoom_window
        coarse = np.array([d.box for d in lores], dtype=np.float64)
        inside = np.all(coarse >= (wx0, wy0, 0, 0), axis=1) & np.all(
            coarse <= (np.inf, np.inf, wx1, wy1), axis=1
        )
        seen = over_smaller(coarse, [d.box for d in zoom]).max(axis=1) >= SAME_PLATE
        return [d for d, drop in zip(lores, inside & seen, strict=True) if not drop]

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
        """Counts, and the last frame's detector time over its passes."""
        d = self.detector
        with self._lock:
            last = len(self._recent[-1].detections) if self._recent else 0
            passes = self.passes
        t = Timing(
            sum(p.pre_ms for p in passes),
            sum(p.invoke_ms for p in passes),
            sum(p.post_ms for p in passes),
        )
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


def box_of(window: tuple[Point, ...]) -> Box | None:
    """Two config points as an integer box (x0, y0, x1, y1), or None for an empty setting."""
    if not window:
        return None
    (ax, ay), (bx, by) = window
    return (round(min(ax, bx)), round(min(ay, by)), round(max(ax, bx)), round(max(ay, by)))


def stage_boxes(
    cfg: DetectorConfig, zoom_window: tuple[Point, ...] = (), area: tuple[Point, ...] = ()
) -> tuple[Box | None, Box | None]:
    """The zoom window and lores area a stage runs with: the config's, else the ones given
    (the sim's)."""
    return box_of(cfg.zoom_window or zoom_window), box_of(cfg.area or area)


def build_stage(
    cfg: DetectorConfig,
    backend: Backend | None = None,
    zoom_window: tuple[Point, ...] = (),
    area: tuple[Point, ...] = (),
) -> DetectorStage | None:
    """The detector stage the config asks for (None when disabled); ModelError if refused.
    `zoom_window` and `area` stand in for `cfg.zoom_window` and `cfg.area` when those are
    not set (the sim's)."""
    if not cfg.enabled:
        return None
    box, lores_area = stage_boxes(cfg, zoom_window, area)
    return DetectorStage(PlateDetector.from_config(cfg, backend), zoom_window=box, area=lores_area)
