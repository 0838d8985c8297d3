"""Model manifests: the JSON file beside each model that says what it is and how to run it.

    {"name": "plates", "version": "2025.10.0", "format": "centernet-ltrb-log/v1",
     "file": "plates-2025.10.0.tflite", "sha256": "…64 hex…",
     "input_width": 960, "input_height": 544, "input_range": "0-1", "stride": 4,
     "score_threshold": 0.35, "nms_iou": 0.5, "max_detections": 100, "size_multiple": 32}

`file` is a plain file name in the manifest's own folder. `load_model` checks the file's
sha256 BEFORE the runtime sees a byte of it (the bytes hashed are the bytes loaded), then that
the model's tensors match the manifest. Every refusal is a `ModelError` of one line naming the
file. Keys the node does not know (the trainer's notes, metrics) are ignored.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from node.infer.letterbox import INPUT_RANGES
from node.infer.runtime import (
    Backend,
    Interpreter,
    ModelError,
    ModelIO,
    default_backend,
    first_line,
)

FORMAT = "centernet-ltrb-log/v1"
MAX_MODEL_BYTES = 64 * 1024 * 1024
DEFAULT_MANIFEST = Path(__file__).resolve().parent / "models" / "plates.json"


@dataclass(frozen=True)
class ModelManifest:
    name: str
    version: str
    file: str  # a plain file name in the manifest's folder
    sha256: str  # 64 lowercase hex digits
    input_width: int
    input_height: int
    stride: int = 4
    score_threshold: float = 0.35
    nms_iou: float = 0.5
    max_detections: int = 100
    format: str = FORMAT
    input_range: str = "0-1"  # the model's real input: pixel / 255 ("0-1") or the pixel ("0-255")
    # Pyramid levels for still images (`roadnode detect`, `eval-detector`): each level places
    # the image at that fraction of the fitting size, so plates larger than the model sees in
    # one pass are found at a smaller level. The live stage runs one pass at 1.0.
    pyramid: tuple[float, ...] = (1.0,)
    # 0: the model runs only at input_width x input_height. Else it also runs at any smaller
    # size that is a multiple of this (a fully convolutional net whose graph keeps no shapes):
    # the node then sizes each pass to its image instead of padding it to the full input.
    size_multiple: int = 0
    path: Path = field(default=Path(), compare=False)  # the manifest file itself

    @property
    def model_path(self) -> Path:
        return self.path.parent / self.file

    @property
    def label(self) -> str:
        """ "name version", for status lines."""
        return f"{self.name} {self.version}"


# key → (type, required, check on the value or None, what the check wants)
_KEYS: dict[str, tuple[type, bool, Any, str]] = {
    "name": (str, True, lambda v: 0 < len(v) <= 64, "1 to 64 characters"),
    "version": (str, True, lambda v: 0 < len(v) <= 64, "1 to 64 characters"),
    "format": (str, True, None, ""),
    "file": (str, True, None, ""),
    "sha256": (str, True, lambda v: re.fullmatch(r"[0-9a-f]{64}", v), "64 lowercase hex digits"),
    "input_width": (int, True, lambda v: 16 <= v <= 4096, "16 … 4096"),
    "input_height": (int, True, lambda v: 16 <= v <= 4096, "16 … 4096"),
    "stride": (int, False, lambda v: 1 <= v <= 64, "1 … 64"),
    "score_threshold": (float, False, lambda v: 0 < v < 1, "between 0 and 1"),
    "nms_iou": (float, False, lambda v: 0 < v <= 1, "above 0, at most 1"),
    "max_detections": (int, False, lambda v: 1 <= v <= 1000, "1 … 1000"),
    "input_range": (str, False, lambda v: v in INPUT_RANGES, " or ".join(INPUT_RANGES)),
    "size_multiple": (int, False, lambda v: 0 <= v <= 256, "0 … 256"),
}


def _value(path: Path, key: str, value: Any, kind: type) -> Any:
    names = {str: "a string", int: "a whole number", float: "a number"}
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise ModelError(f"{path}: '{key}' must be {names[kind]}, got {value!r}")
    return value


def _plain_name(path: Path, name: str) -> str:
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ModelError(
            f"{path}: 'file' must be a plain file name in the manifest's folder, got {name!r}"
        )
    return name


def _pyramid(path: Path, raw: Any) -> tuple[float, ...]:
    levels = raw if isinstance(raw, list) else None
    if (
        not levels
        or len(levels) > 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels)
        or not all(0.05 <= v <= 1.0 for v in levels)
    ):
        raise ModelError(
            f"{path}: 'pyramid' must be a list of 1 to 4 numbers from 0.05 to 1, got {raw!r}"
        )
    return tuple(float(v) for v in levels)


Keys = dict[str, tuple[type, bool, Any, str]]  # key → (type, required, check or None, wants)


def checked_keys(raw: Any, path: Path, keys: Keys) -> dict[str, Any]:
    """The values of `keys` in a decoded manifest (from `path`), each of its type and passing
    its check; ModelError naming the first key that does not (the detector's and the
    reader's manifests share it)."""
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: must be a JSON object, got {type(raw).__name__}")
    values: dict[str, Any] = {}
    for key, (kind, required, check, wants) in keys.items():
        if key not in raw:
            if required:
                raise ModelError(f"{path}: missing key '{key}'")
            continue
        value = _value(path, key, raw[key], kind)
        if check is not None and not check(value):
            raise ModelError(f"{path}: '{key}' must be {wants}, got {value!r}")
        values[key] = value
    return values


def parse_manifest(raw: Any, path: Path) -> ModelManifest:
    """Check a decoded manifest (from `path`) and build it; ModelError on the first problem."""
    values = checked_keys(raw, path, _KEYS)
    if values["format"] != FORMAT:
        raise ModelError(
            f"{path}: unsupported format {values['format']!r} (this node reads {FORMAT})"
        )
    _plain_name(path, values["file"])
    if "pyramid" in raw:
        values["pyramid"] = _pyramid(path, raw["pyramid"])
    stride = values.get("stride", 4)
    if values["input_width"] % stride or values["input_height"] % stride:
        raise ModelError(
            f"{path}: input {values['input_width']}x{values['input_height']} is not a multiple "
            f"of the stride {stride}"
        )
    multiple = values.get("size_multiple", 0)
    if multiple % stride:
        raise ModelError(
            f"{path}: 'size_multiple' {multiple} is not a multiple of the stride {stride}"
        )
    return ModelManifest(**values, path=path)


def read_json(path: Path, what: str = "model manifest") -> Any:
    """The JSON document at `path`; ModelError naming `what` when it is missing or garbled."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: cannot read {what}: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: not valid JSON: {e.msg} (line {e.lineno})") from None


def read_manifest(path: Path) -> ModelManifest:
    """Read and check the manifest at `path`."""
    return parse_manifest(read_json(path), path)


class _Named(Protocol):
    """What `read_model_bytes` needs of a manifest (the detector's or the reader's)."""

    @property
    def path(self) -> Path: ...
    @property
    def sha256(self) -> str: ...
    @property
    def model_path(self) -> Path: ...


def read_model_bytes(manifest: _Named) -> bytes:
    """The model file's bytes, once their sha256 matches the manifest's."""
    model = manifest.model_path
    try:
        size = model.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelError(f"{model}: model file is {size} bytes, over {MAX_MODEL_BYTES}")
        content = model.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{model}: model file not found (named by {manifest.path})") from None
    except OSError as e:
        raise ModelError(f"{model}: cannot read model file: {e.strerror or e}") from None
    digest = hashlib.sha256(content).hexdigest()
    if digest != manifest.sha256:
        raise ModelError(
            f"{model}: sha256 mismatch: manifest {manifest.path.name} says "
            f"{manifest.sha256[:12]}…, the file is {digest[:12]}…"
        )
    return content


def check_io(io: ModelIO, manifest: ModelManifest, size: tuple[int, int] | None = None) -> None:
    """The model's tensors must have the sizes the manifest promises (at input `size`, default
    the manifest's)."""
    model = manifest.model_path
    w, h = size or (manifest.input_width, manifest.input_height)
    if io.input_size != (w, h):
        raise ModelError(
            f"{model}: input is {io.input_size[0]}x{io.input_size[1]}, the manifest says {w}x{h}"
        )
    grid = (1, h // manifest.stride, w // manifest.stride)
    for name, spec in (("heat", io.heat), ("box", io.box)):
        if spec.shape[:3] != grid:
            raise ModelError(
                f"{model}: {name} output is {list(spec.shape)}, expected "
                f"{[*grid, spec.shape[3]]} at stride {manifest.stride}"
            )


def open_at(
    content: bytes,
    manifest: ModelManifest,
    size: tuple[int, int],
    num_threads: int,
    backend: Backend,
) -> tuple[Interpreter, ModelIO]:
    """An interpreter for the verified model bytes at input `size` (width, height), tensors
    allocated and checked; ModelError naming the file when it does not run at that size."""
    interpreter = backend.open(content, manifest.model_path, num_threads)
    if size != (manifest.input_width, manifest.input_height):
        w, h = size
        try:
            index = int(interpreter.get_input_details()[0]["index"])
            interpreter.resize_tensor_input(index, [1, h, w, 3])
            interpreter.allocate_tensors()
        except Exception as e:  # each runtime raises its own types
            raise ModelError(
                f"{manifest.model_path}: does not run at {w}x{h} (manifest size_multiple "
                f"{manifest.size_multiple}): {first_line(e)}"
            ) from e
    io = ModelIO.read(interpreter, manifest.model_path)
    check_io(io, manifest, size)
    return interpreter, io


def load_model(
    manifest_path: Path | str, num_threads: int = 2, backend: Backend | None = None
) -> tuple[Interpreter, ModelManifest]:
    """Read the manifest, verify the model file, load it; ModelError naming what was refused."""
    manifest = read_manifest(Path(manifest_path))
    content = read_model_bytes(manifest)
    size = (manifest.input_width, manifest.input_height)
    return open_at(content, manifest, size, num_threads, backend or default_backend())[0], manifest
