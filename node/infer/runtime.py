"""The TFLite runtime: which interpreter package is installed, and what a loaded model exposes.

Three packages provide the same `Interpreter` class; the first one that imports wins:
`ai-edge-litert` (x86_64, aarch64), `tflite-runtime` (armv7l, Python < 3.12) and, last, full
`tensorflow` (a development machine). `Backend.name` says which one ran, with its version,
e.g. "ai-edge-litert 2.3.0", for status and logs.

`ModelIO` reads the interpreter's tensor details once: the input tensor and the two outputs of
the plate-detector contract, told apart by channel count (heat: 1, box: 4), each with the
(scale, zero_point) that (de)quantizes it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


class ModelError(Exception):
    """A model could not be loaded or was refused; the message is one line naming the file."""


class Interpreter(Protocol):
    """The subset of the TFLite `Interpreter` API the detector uses."""

    def allocate_tensors(self) -> None: ...

    def resize_tensor_input(self, input_index: int, tensor_size: Any) -> None: ...

    def get_input_details(self) -> list[dict[str, Any]]: ...

    def get_output_details(self) -> list[dict[str, Any]]: ...

    def set_tensor(self, tensor_index: int, value: npt.NDArray[Any]) -> None: ...

    def invoke(self) -> None: ...

    def get_tensor(self, tensor_index: int) -> npt.NDArray[Any]: ...


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's text (runtimes raise multi-line errors)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


@dataclass(frozen=True)
class Backend:
    """An interpreter package: its name and version, and the `Interpreter` class it provides."""

    name: str
    factory: Callable[..., Interpreter]  # called as factory(model_content=..., num_threads=...)

    def open(self, content: bytes, source: Path, num_threads: int) -> Interpreter:
        """An interpreter for the model bytes `content` (read from `source`), tensors allocated."""
        try:
            interpreter = self.factory(model_content=content, num_threads=num_threads)
            interpreter.allocate_tensors()
        except Exception as e:  # each runtime raises its own types (ValueError, RuntimeError)
            raise ModelError(f"{source}: cannot load model: {first_line(e)}") from e
        return interpreter


# (module to import, attribute path to the Interpreter class, distribution names for the version)
CANDIDATES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ai_edge_litert.interpreter", "Interpreter", ("ai-edge-litert",)),
    ("tflite_runtime.interpreter", "Interpreter", ("tflite-runtime",)),
    ("tensorflow", "lite.Interpreter", ("tensorflow", "tensorflow-cpu")),
)


def _version(module: Any, dists: Sequence[str]) -> str:
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return str(getattr(module, "__version__", "unknown version"))


def find_backend(
    candidates: Sequence[tuple[str, str, tuple[str, ...]]] = CANDIDATES,
) -> Backend:
    """The first interpreter package that imports, in `candidates` order."""
    for module_name, attr_path, dists in candidates:
        try:
            module: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        factory: Any = module
        for attr in attr_path.split("."):
            factory = getattr(factory, attr, None)
        if factory is None:
            continue
        return Backend(f"{dists[0]} {_version(module, dists)}", factory)
    names = ", ".join(dists[0] for _, _, dists in candidates)
    raise ModelError(f"no TFLite runtime installed (tried {names})")


@functools.cache
def default_backend() -> Backend:
    """`find_backend()`, looked up once per process."""
    return find_backend()


# --- what a loaded model exposes -------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor: where it is, its shape and type, how it is quantized."""

    index: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    scale: float  # 0.0: not quantized
    zero_point: int

    @classmethod
    def from_detail(cls, detail: dict[str, Any]) -> TensorSpec:
        scale, zero_point = detail.get("quantization", (0.0, 0))
        return cls(
            index=int(detail["index"]),
            shape=tuple(int(n) for n in detail["shape"]),
            dtype=np.dtype(detail["dtype"]),
            scale=float(scale),
            zero_point=int(zero_point),
        )

    def dequantize(self, values: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Real values as float32: (q - zero_point) * scale, or a plain cast when not quantized."""
        if self.scale == 0.0:
            return values.astype(np.float32)
        out = values.astype(np.float32)
        out -= self.zero_point
        out *= self.scale
        return out


@dataclass(frozen=True)
class ModelIO:
    """The tensors of a plate-detector model, checked against the contract."""

    input: TensorSpec
    heat: TensorSpec
    box: TensorSpec

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) the model takes."""
        return self.input.shape[2], self.input.shape[1]

    @classmethod
    def read(cls, interpreter: Interpreter, source: Path) -> ModelIO:
        """Read and check the tensor details; ModelError naming `source` when off-contract."""
        inputs = [TensorSpec.from_detail(d) for d in interpreter.get_input_details()]
        outputs = [TensorSpec.from_detail(d) for d in interpreter.get_output_details()]
        if len(inputs) != 1:
            raise ModelError(f"{source}: expected 1 input tensor, found {len(inputs)}")
        image = inputs[0]
        if len(image.shape) != 4 or image.shape[0] != 1 or image.shape[3] != 3:
            raise ModelError(f"{source}: input must be [1, H, W, 3], found {list(image.shape)}")
        if image.dtype not in (np.uint8, np.int8, np.float32):
            raise ModelError(f"{source}: input must be uint8, int8 or float32, found {image.dtype}")
        if image.dtype == np.int8 and image.scale == 0.0:
            raise ModelError(f"{source}: int8 input has no quantization parameters")
        by_channels = {spec.shape[-1]: spec for spec in outputs if len(spec.shape) == 4}
        if len(outputs) != 2 or set(by_channels) != {1, 4}:
            shapes = [list(spec.shape) for spec in outputs]
            raise ModelError(
                f"{source}: expected 2 outputs with 1 and 4 channels (heat, box), found {shapes}"
            )
        return cls(image, by_channels[1], by_channels[4])
