"""Training targets for the `centernet-ltrb-log/v1` heads, in numpy.

For each plate box: an elliptical Gaussian on the heat map centred on the box centre's cell
(sigma from the box size in cells, at least 0.6 cells, so a 12 px plate still gets a peak), and
box targets ln(d / STRIDE) for every cell near the centre (where that Gaussian is above
`BOX_REGION`), weighted by the Gaussian: the decoder reads the box at the peak, but neighbours
learn it too, which steadies training.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tools.detector.arch import STRIDE

BOX_REGION = 0.3
MIN_DIST = 0.5  # px: a cell centre on an edge still has a finite log distance

F32 = npt.NDArray[np.float32]


def encode(boxes: F32, height: int, width: int, per_plate: bool = False) -> tuple[F32, F32, F32]:
    """(heat [h,w,1], box [h,w,4], weight [h,w,1]) for `boxes` (N,4) in input pixels.

    Box weights: by default each cell's Gaussian value (1 at the centre), so a plate's share
    of the box loss grows with its area. `per_plate` gives every plate the same share: half
    on its centre cell (where the decoder reads the box), half spread over its region by the
    Gaussian; a 12 px plate then counts as much as one filling the crop."""
    h, w = height // STRIDE, width // STRIDE
    heat = np.zeros((h, w), np.float32)
    box = np.zeros((h, w, 4), np.float32)
    weight = np.zeros((h, w), np.float32)
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    for x0, y0, x1, y1 in boxes[order]:  # large first, so small plates win shared cells
        bw, bh = (x1 - x0) / STRIDE, (y1 - y0) / STRIDE
        if bw <= 0 or bh <= 0:
            continue
        cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
        ci, cj = min(int(cy), h - 1), min(int(cx), w - 1)
        sx, sy = max(0.6, bw / 6), max(0.6, bh / 6)
        i0, i1 = max(0, int(cy - 3 * sy)), min(h, int(cy + 3 * sy) + 2)
        j0, j1 = max(0, int(cx - 3 * sx)), min(w, int(cx + 3 * sx) + 2)
        ii, jj = np.mgrid[i0:i1, j0:j1]
        g = np.exp(-(((jj - (cj)) / sx) ** 2 + ((ii - (ci)) / sy) ** 2) / 2).astype(np.float32)
        heat[i0:i1, j0:j1] = np.maximum(heat[i0:i1, j0:j1], g)
        heat[ci, cj] = 1.0
        region = g >= BOX_REGION
        px, py = (jj + 0.5) * STRIDE, (ii + 0.5) * STRIDE
        d = np.stack([px - x0, py - y0, x1 - px, y1 - py], axis=-1)
        region &= (d > 0).all(axis=-1)
        region[ci - i0, cj - j0] = True
        d = np.log(np.maximum(d, MIN_DIST) / STRIDE)
        sub_box, sub_w = box[i0:i1, j0:j1], weight[i0:i1, j0:j1]
        sub_box[region] = d[region]
        if per_plate:
            sub_w[region] = 0.5 * g[region] / float(g[region].sum())
            sub_w[ci - i0, cj - j0] += 0.5
        else:
            sub_w[region] = g[region]
            sub_w[ci - i0, cj - j0] = 1.0
    return heat[..., None], box, weight[..., None]
