"""Turning an immutable snapshot of the simulated scene into pixels and plate ground truth.

A `SceneSnapshot` lists what is on the road (sprites and road positions, far to near) and the
signal phase. `SceneRenderer` pastes cached scaled sprites over the fixed background for the
lores stream on every frame, and for the main stream only when `SimMainRef.array()` asks.
Plate truth is computed from the same placement arithmetic as the main render, so each box is
exactly where that render pastes the plate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from node.capture.frame import Image as ImageArray
from node.capture.frame import PlateTruth
from node.capture.platerender import PlateSpec
from node.capture.simscene import Camera, background, draw_lamp, lores_background
from node.capture.simsprites import Sprite, SpriteCache, level_for


@dataclass(frozen=True, slots=True)
class VehicleView:
    """One vehicle as the camera sees it at an instant."""

    vid: int
    body: Sprite
    x: float  # lateral road position of the face's centre, metres
    z: float  # distance of the face nearest the camera, metres
    plate: Sprite | None = None
    spec: PlateSpec | None = None
    plate_at: tuple[float, float] = (0.0, 0.0)  # plate centre (x, height) on the face


@dataclass(frozen=True, slots=True)
class SceneSnapshot:
    """Everything a render needs; views are ordered far to near (painter's order)."""

    phase: str
    views: tuple[VehicleView, ...]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a sprite, scaled to ladder `level`, lands in a target image."""

    level: int
    x0: int
    y0: int
    w: int
    h: int

    def clip(self, width: int, height: int) -> tuple[int, int, int, int] | None:
        """The part inside a width x height image as (x0, y0, x1, y1), or None."""
        x0, y0 = max(self.x0, 0), max(self.y0, 0)
        x1, y1 = min(self.x0 + self.w, width), min(self.y0 + self.h, height)
        return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


class SceneRenderer:
    """Renders snapshots at lores and main resolution (thread-safe: main renders run anywhere)."""

    def __init__(self, main: tuple[int, int], lores: tuple[int, int], cache: SpriteCache) -> None:
        self.cam = Camera(*main)
        self.main_size = main
        self.lores_size = lores
        self.cache = cache
        self._bg_main = background(*main)
        self._bg_lores = lores_background(*main, *lores)

    def render_lores(self, snap: SceneSnapshot) -> ImageArray:
        sx, sy = self.lores_size[0] / self.main_size[0], self.lores_size[1] / self.main_size[1]
        return self._render(snap, self._bg_lores, sx, sy)

    def render_main(self, snap: SceneSnapshot) -> ImageArray:
        return self._render(snap, self._bg_main, 1.0, 1.0)

    def _render(self, snap: SceneSnapshot, bg: Image.Image, sx: float, sy: float) -> ImageArray:
        img = bg.copy()
        draw_lamp(img, self.cam, snap.phase, sx, sy)
        for view in snap.views:
            body, plate = self.place(view, sx, sy)
            if body.clip(*img.size) is None:
                continue
            sprite = self.cache.get(view.body, body.level)
            img.paste(sprite, (body.x0, body.y0), sprite)
            if plate is not None and view.plate is not None:
                scaled = self.cache.get(view.plate, plate.level)
                img.paste(scaled, (plate.x0, plate.y0), scaled)
        return np.asarray(img)

    def place(self, view: VehicleView, sx: float, sy: float) -> tuple[Placement, Placement | None]:
        """Placements of the body and the plate in an image scaled (sx, sy) from main."""
        level = level_for(self.cam.f * math.sqrt(sx * sy) / view.z)
        u, v = self.cam.project(view.x, 0.0, view.z)
        u, v = u * sx, v * sy
        w, h = view.body.size_at(level)
        ax, ay = view.body.anchor_at(level)
        body = Placement(level, round(u - ax), round(v - ay), w, h)
        if view.plate is None:
            return body, None
        kx = w * view.body.px_per_m / view.body.image.width  # the body's actual px per metre
        ky = h * view.body.px_per_m / view.body.image.height
        pw, ph = view.plate.size_at(level)
        pu = body.x0 + ax + view.plate_at[0] * kx
        pv = body.y0 + ay - view.plate_at[1] * ky
        return body, Placement(level, round(pu - pw / 2.0), round(pv - ph / 2.0), pw, ph)

    def truth(self, snap: SceneSnapshot) -> tuple[PlateTruth, ...]:
        """Main-pixel boxes of the plates at least partly in frame.

        The box is clipped to the image; `visible` is the fraction of the whole plate that
        is in frame and not hidden by a nearer vehicle.
        """
        width, height = self.main_size
        placed = [(view, *self.place(view, 1.0, 1.0)) for view in snap.views]
        out = []
        for i, (view, _, plate) in enumerate(placed):
            if plate is None or view.spec is None:
                continue
            box = plate.clip(width, height)
            if box is None:
                continue
            covered = np.zeros((box[3] - box[1], box[2] - box[0]), dtype=bool)
            for nearer, body, _ in placed[i + 1 :]:
                _cover(covered, box, nearer.body, body)
            visible = float((~covered).sum()) / float(plate.w * plate.h)
            spec = view.spec
            fbox = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
            out.append(PlateTruth(view.vid, spec.text, spec.layout, spec.color, fbox, visible))
        return tuple(out)


def _cover(
    covered: np.ndarray[tuple[int, int], np.dtype[np.bool_]],
    box: tuple[int, int, int, int],
    sprite: Sprite,
    at: Placement,
) -> None:
    """Marks the pixels of `box` that the opaque part of `sprite` (placed `at`) hides."""
    x0, y0 = max(box[0], at.x0), max(box[1], at.y0)
    x1, y1 = min(box[2], at.x0 + at.w), min(box[3], at.y0 + at.h)
    if x0 >= x1 or y0 >= y1:
        return
    mh, mw = sprite.mask.shape
    cols = ((np.arange(x0, x1) + 0.5 - at.x0) * mw / at.w).astype(np.intp)
    rows = ((np.arange(y0, y1) + 0.5 - at.y0) * mh / at.h).astype(np.intp)
    hidden = sprite.mask[np.clip(rows, 0, mh - 1)[:, None], np.clip(cols, 0, mw - 1)[None, :]]
    covered[y0 - box[1] : y1 - box[1], x0 - box[0] : x1 - box[0]] |= hidden


@dataclass(frozen=True, slots=True)
class SimMainRef:
    """The main image of one simulated frame, rendered on demand from its snapshot."""

    renderer: SceneRenderer
    snapshot: SceneSnapshot

    @property
    def shape(self) -> tuple[int, int, int]:
        w, h = self.renderer.main_size
        return (h, w, 3)

    @property
    def nbytes(self) -> int:
        """The snapshot only: a few small records per vehicle (sprites are shared)."""
        return 64 + 96 * len(self.snapshot.views)

    def array(self) -> ImageArray:
        return self.renderer.render_main(self.snapshot)
