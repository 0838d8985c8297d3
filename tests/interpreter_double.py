"""A test double for the TFLite `Interpreter` (ai-edge-litert 2.x / tflite-runtime 2.14 API).

It honours the subset `node.infer` uses, with the real shapes and types:

- `Interpreter(model_content=bytes, num_threads=int)`; raises ValueError for content it is told
  to refuse (as the real one does for a buffer that is not a model).
- `allocate_tensors()`; `invoke()` before it raises RuntimeError; `resize_tensor_input()`
  raises RuntimeError (a model whose shapes are fixed).
- `get_input_details()` / `get_output_details()` -> list of dicts with "name", "index",
  "shape" (int32 array), "dtype" (a numpy type), "quantization" ((scale, zero_point)) and
  "quantization_parameters".
- `set_tensor(index, value)` checks dtype and shape exactly (ValueError otherwise) and copies;
  `get_tensor(index)` returns a copy.

What the "model" outputs is set on a `Rig`: real-valued heat (H/4, W/4) and box (H/4, W/4, 4)
maps, quantized on the way out with each output's (scale, zero_point) into int8, as a
full-integer model gives them. `write_model` puts a model file and its manifest on disk.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from node.infer.manifest import FORMAT
from node.infer.runtime import Backend

FloatMap = npt.NDArray[np.float64]


def quantize(real: npt.ArrayLike, scale: float, zero_point: int, dtype: Any) -> npt.NDArray[Any]:
    info = np.iinfo(dtype)
    q = np.round(np.asarray(real, dtype=np.float64) / scale) + zero_point
    out: npt.NDArray[Any] = np.clip(q, info.min, info.max).astype(dtype)
    return out


@dataclass
class Rig:
    """What the double's model looks like and outputs."""

    width: int = 64
    height: int = 32
    input_dtype: Any = np.int8
    input_quant: tuple[float, int] = (1 / 255, -128)
    heat_quant: tuple[float, int] = (1 / 256, -128)
    box_quant: tuple[float, int] = (1 / 32, 0)
    heat: FloatMap | None = None  # (H/4, W/4); zeros when None
    box: FloatMap | None = None  # (H/4, W/4, 4); zeros when None
    output_order: tuple[str, str] = ("box", "heat")  # outputs are found by channels, not order
    refuse: bytes = b"not a model"  # model_content that fails to load
    opened: list[Interpreter] = field(default_factory=list)

    def backend(self) -> Backend:
        return Backend("double 1.0", self.open)

    def open(self, model_content: bytes, num_threads: int | None = None) -> Interpreter:
        if model_content == self.refuse:
            raise ValueError("Model provided has model identifier 'a mo', should be 'TFL3'\n")
        interpreter = Interpreter(self, num_threads)
        self.opened.append(interpreter)
        return interpreter


def _detail(name: str, index: int, shape: tuple[int, ...], dtype: Any, quant: Any) -> Any:
    scale, zp = quant
    return {
        "name": name,
        "index": index,
        "shape": np.array(shape, dtype=np.int32),
        "shape_signature": np.array(shape, dtype=np.int32),
        "dtype": dtype,
        "quantization": (scale, zp),
        "quantization_parameters": {
            "scales": np.array([scale], dtype=np.float32),
            "zero_points": np.array([zp], dtype=np.int32),
            "quantized_dimension": 0,
        },
        "sparsity_parameters": {},
    }


class Interpreter:
    def __init__(self, rig: Rig, num_threads: int | None) -> None:
        self.rig = rig
        self.num_threads = num_threads
        self.allocated = False
        self.invocations = 0
        gh, gw = rig.height // 4, rig.width // 4
        specs = {
            "heat": ((1, gh, gw, 1), np.int8, rig.heat_quant),
            "box": ((1, gh, gw, 4), np.int8, rig.box_quant),
        }
        self._inputs = [
            _detail("image", 0, (1, rig.height, rig.width, 3), rig.input_dtype, rig.input_quant)
        ]
        self._outputs = [_detail(n, 1 + k, *specs[n]) for k, n in enumerate(rig.output_order)]
        self._tensors: dict[int, npt.NDArray[Any]] = {}

    def allocate_tensors(self) -> None:
        self.allocated = True
        for d in self._inputs + self._outputs:
            self._tensors[d["index"]] = np.zeros(tuple(d["shape"]), dtype=d["dtype"])

    def resize_tensor_input(self, input_index: int, tensor_size: Any) -> None:
        """The double's "model" has its shapes fixed, as a graph with a baked reshape does: the
        real runtime fails at `allocate_tensors`, the double at once."""
        raise RuntimeError(f"tensor {input_index}: this model's shapes are fixed")

    def get_input_details(self) -> list[dict[str, Any]]:
        return [dict(d) for d in self._inputs]

    def get_output_details(self) -> list[dict[str, Any]]:
        return [dict(d) for d in self._outputs]

    def set_tensor(self, tensor_index: int, value: npt.NDArray[Any]) -> None:
        detail = next((d for d in self._inputs if d["index"] == tensor_index), None)
        if detail is None:
            raise ValueError(f"Tensor {tensor_index} is not an input")
        if value.dtype != np.dtype(detail["dtype"]):
            raise ValueError(
                f"Cannot set tensor: Got value of type {value.dtype} but expected type "
                f"{np.dtype(detail['dtype'])} for input {tensor_index}, name: image"
            )
        if value.shape != tuple(detail["shape"]):
            raise ValueError(
                f"Cannot set tensor: Dimension mismatch. Got {value.shape} but expected "
                f"{tuple(detail['shape'])} for input {tensor_index}."
            )
        self._tensors[tensor_index] = value.copy()

    @property
    def last_input(self) -> npt.NDArray[Any]:
        return self._tensors[0]

    def invoke(self) -> None:
        if not self.allocated:
            raise RuntimeError("Invoke called on model that is not ready.")
        self.invocations += 1
        rig = self.rig
        for d in self._outputs:
            gh, gw, c = (int(n) for n in d["shape"][1:])
            real = rig.heat if c == 1 else rig.box
            real = np.zeros((gh, gw, c)) if real is None else np.asarray(real).reshape(gh, gw, c)
            scale, zero_point = d["quantization"]
            self._tensors[d["index"]] = quantize(real[None], scale, zero_point, np.int8)

    def get_tensor(self, tensor_index: int) -> npt.NDArray[Any]:
        if tensor_index not in self._tensors:
            raise ValueError(f"Tensor {tensor_index} has no data")
        return self._tensors[tensor_index].copy()


MODEL = b"fake model bytes v1"


def write_model(folder: Path, content: bytes = MODEL, name: str = "plates", **changes: Any) -> Path:
    """A model file and its manifest in `folder` (the double's default size, 64x32)."""
    (folder / f"{name}.tflite").write_bytes(content)
    raw: dict[str, Any] = {
        "name": name,
        "version": "1.0.0",
        "format": FORMAT,
        "file": f"{name}.tflite",
        "sha256": hashlib.sha256(content).hexdigest(),
        "input_width": 64,
        "input_height": 32,
        "stride": 4,
        "score_threshold": 0.4,
        "nms_iou": 0.5,
        "max_detections": 10,
        "trainer_notes": {"epochs": 80},  # unknown keys are the trainer's business
    }
    raw.update(changes)
    raw = {k: v for k, v in raw.items() if v is not None}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path
