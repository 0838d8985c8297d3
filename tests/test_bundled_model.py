"""The bundled plate model, through the node's own runtime: it finds plates, and only plates.

The images are made here from the shared plate renderer (every layout and colour, several
sizes, on a junction background), so these tests need nothing outside the repository.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from node.capture.platerender import COLORS, LAYOUTS, random_plate_text, render_plate
from node.capture.sim import SimSource
from node.config import CaptureConfig
from node.infer.decode import iou_matrix
from node.infer.detector import PlateDetector
from node.infer.manifest import DEFAULT_MANIFEST, read_manifest
from node.infer.runtime import ModelError

pytestmark = pytest.mark.skipif(
    not DEFAULT_MANIFEST.exists(),
    reason="no bundled model in this build yet (issue 3): these tests are its acceptance bar",
)


# Where the bundled model (det-v6, at its manifest threshold 0.5) is still below the bar of
# issue 3: strict, so a model that passes turns these into failures until the marks are removed
# (docs/detector-training.md).
BELOW_BAR = pytest.mark.xfail(strict=True, reason="bundled model below the issue-3 bar")


@pytest.fixture(scope="module")
def detector() -> PlateDetector:
    return PlateDetector(DEFAULT_MANIFEST, threads=2)


@pytest.fixture(scope="module")
def road() -> npt.NDArray[np.uint8]:
    """An empty stretch of the simulated junction (960x544), as a background."""
    source = SimSource("sim://junction?seed=4&fps=0&rate=0", CaptureConfig())
    source.open(threading.Event())
    frame = source.read()
    source.close()
    assert frame is not None
    return np.ascontiguousarray(frame.lores)


def paste(
    road: npt.NDArray[np.uint8],
    layout: str,
    color: str,
    width_px: int,
    seed: int,
    at: tuple[int, int],
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """`road` with one plate `width_px` wide pasted at `at`; (image, its box)."""
    rng = np.random.default_rng(seed)
    mm_w = LAYOUTS[layout][0]
    plate = render_plate(random_plate_text(layout, rng), layout, color, width_px / mm_w * 1000)
    img = Image.fromarray(road.copy())
    tile = Image.fromarray(plate)
    img.paste(tile, at, tile)
    x, y = at
    return np.asarray(img), np.array([[x, y, x + tile.width, y + tile.height]], np.float32)


def best_iou(found: list[tuple[float, float, float, float]], box: npt.NDArray[np.float32]) -> float:
    if not found:
        return 0.0
    return float(iou_matrix(np.array(found, np.float32), box).max())


@pytest.mark.parametrize(
    ("layout", "color"),
    [(layout, color) for color in sorted(COLORS) for layout in sorted(LAYOUTS)],
)
def test_every_format_is_found(
    detector: PlateDetector, road: npt.NDArray[np.uint8], layout: str, color: str
) -> None:
    seed = sorted(LAYOUTS).index(layout) * 10 + sorted(COLORS).index(color)
    image, box = paste(road, layout, color, 70, seed=seed, at=(400, 300))
    found = [d.box for d in detector.detect(image)]
    assert best_iou(found, box) >= 0.5, f"{layout}/{color}: {found} vs {box}"


@pytest.mark.parametrize(
    "width_px", [pytest.param(w, marks=BELOW_BAR) for w in (16, 24)] + [40, 120, 300]
)
def test_plates_from_small_to_large_are_found(
    detector: PlateDetector, road: npt.NDArray[np.uint8], width_px: int
) -> None:
    hits = 0
    for k, layout in enumerate(("car1", "car2", "moto")):
        image, box = paste(road, layout, "white", width_px, seed=k, at=(300 + k * 7, 200))
        hits += best_iou([d.box for d in detector.detect(image)], box) >= 0.5
    assert hits >= 2, f"only {hits} of 3 plates {width_px} px wide were found"


def test_empty_road_has_few_false_plates(
    detector: PlateDetector, road: npt.NDArray[np.uint8]
) -> None:
    assert len(detector.detect(road)) <= 1


def test_manifest_matches_the_bundled_file() -> None:
    manifest = read_manifest(DEFAULT_MANIFEST)
    blob = manifest.model_path.read_bytes()
    assert hashlib.sha256(blob).hexdigest() == manifest.sha256
    assert len(blob) <= 2 * 1024 * 1024  # the size cap
    assert manifest.input_width % manifest.stride == 0


def test_a_tampered_copy_is_refused(tmp_path: Path) -> None:
    manifest = read_manifest(DEFAULT_MANIFEST)
    shutil.copy(DEFAULT_MANIFEST, tmp_path / DEFAULT_MANIFEST.name)
    blob = bytearray(manifest.model_path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (tmp_path / manifest.file).write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="sha256"):
        PlateDetector(tmp_path / DEFAULT_MANIFEST.name)


def test_the_service_runs_the_bundled_detector(tmp_path: Path) -> None:
    from node.config import Config
    from node.service import RunOptions, Service
    from tests.sourcedouble import CountingSource

    service = Service(Config(), RunOptions(tmp_path, duration_s=1.0), source=CountingSource(20))
    assert service.run() == 0
    status = service.status()
    assert status["detector"]["state"] == "running"
    assert status["detector"]["frames"] > 0
    assert status["latency"]["detector"]["n"] > 0


def test_the_bundled_model_runs_a_band_of_the_frame_at_its_own_size(
    detector: PlateDetector, road: npt.NDArray[np.uint8]
) -> None:
    image, box = paste(road, "car1", "white", 120, seed=3, at=(300, 400))
    band = np.ascontiguousarray(image[256:544])  # the sim's lores area: 288 rows
    found = [d.box for d in detector.detect(band, pyramid=(1.0,))]
    assert best_iou(found, box - np.array([0, 256, 0, 256], np.float32)) >= 0.5, found
    assert (960, 288) in detector._model.runners  # run at 960x288, not padded to 960x544
