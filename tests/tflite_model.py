"""Build a tiny, real, full-integer TFLite model that honours the plate-detector contract.

No TensorFlow needed: the flatbuffer is written with the schema that ai-edge-litert ships
(`ai_edge_litert.schema_py_generated`, the object API). The graph is

    image [1, H, W, 3] uint8 (scale 1/255, zp 0) or int8 (scale 1/255, zp -128)
      → QUANTIZE to int8 (uint8 input only)
      → AVERAGE_POOL_2D 4x4, stride 4            → [1, H/4, W/4, 3] int8
      → CONV_2D 1x1, 1 filter on the red channel  → heat [1, H/4, W/4, 1] int8 = mean red, 0..1
      → CONV_2D 1x1, 4 zero filters + bias        → box  [1, H/4, W/4, 4] int8 = BOX_LOG

so a 4x4 block of pure red on black, aligned to the stride, is one heat peak of exactly 1.0
whose box is the cell centre minus/plus 4·exp(BOX_LOG) (after the int8 rounding: see `box_log`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

schema: Any = pytest.importorskip("ai_edge_litert.schema_py_generated")
flatbuffers: Any = pytest.importorskip("flatbuffers")

HEAT_SCALE, HEAT_ZP = 1 / 256, -128
BOX_SCALE, BOX_ZP = 1 / 32, 0
BOX_LOG = (np.log(2.0), 0.0, np.log(3.0), np.log(1.5))  # left, top, right, bottom: ln(d / 4)
PIXEL_SCALE = 1 / 255
FILTER_SCALE = 1 / 127


def box_log() -> np.ndarray[Any, np.dtype[np.float64]]:
    """BOX_LOG as the model outputs it: quantized to the box output's int8 grid."""
    grid: np.ndarray[Any, np.dtype[np.float64]] = np.round(np.asarray(BOX_LOG) / BOX_SCALE)
    return grid * BOX_SCALE


def _tensor(
    name: str, shape: list[int], ttype: int, scale: list[float], zp: list[int], buffer: int = 0
) -> Any:
    q = schema.QuantizationParametersT()
    q.scale, q.zeroPoint, q.quantizedDimension = scale, zp, 0
    t = schema.TensorT()
    t.name, t.shape, t.type, t.buffer, t.quantization = name, shape, ttype, buffer, q
    return t


def _buffer(data: np.ndarray[Any, Any] | None = None) -> Any:
    b = schema.BufferT()
    if data is not None:
        b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
    return b


def _op(opcode: int, inputs: list[int], outputs: list[int], kind: int, options: Any) -> Any:
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode, inputs, outputs
    op.builtinOptionsType, op.builtinOptions = kind, options
    return op


def _opcode(code: int, version: int) -> Any:
    c = schema.OperatorCodeT()
    c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), version
    return c


def _conv_options() -> Any:
    o = schema.Conv2DOptionsT()
    o.padding, o.strideW, o.strideH = schema.Padding.VALID, 1, 1
    o.dilationWFactor = o.dilationHFactor = 1
    return o


def _pool_options(stride: int) -> Any:
    o = schema.Pool2DOptionsT()
    o.padding = schema.Padding.VALID
    o.strideW = o.strideH = o.filterWidth = o.filterHeight = stride
    return o


def build_model(width: int, height: int, input_dtype: str = "uint8") -> bytes:
    """The model's bytes, ready to write to `x.tflite` (see the module doc for the graph)."""
    t, s = schema.TensorType, 4
    gw, gh = width // s, height // s
    int8_pix = (PIXEL_SCALE, -128)
    bias_scale = PIXEL_SCALE * FILTER_SCALE
    heat_w = np.array([[[[127, 0, 0]]]], dtype=np.int8)  # red x 1.0
    box_b = np.round(np.asarray(BOX_LOG) / bias_scale).astype(np.int32)
    buffers = [_buffer(), _buffer(heat_w), _buffer(np.zeros(1, np.int32))]
    buffers += [_buffer(np.zeros((4, 1, 1, 3), np.int8)), _buffer(box_b)]
    tensors = [
        _tensor("heat_w", [1, 1, 1, 3], t.INT8, [FILTER_SCALE], [0], 1),
        _tensor("heat_b", [1], t.INT32, [bias_scale], [0], 2),
        _tensor("box_w", [4, 1, 1, 3], t.INT8, [FILTER_SCALE] * 4, [0] * 4, 3),
        _tensor("box_b", [4], t.INT32, [bias_scale] * 4, [0] * 4, 4),
        _tensor("pooled", [1, gh, gw, 3], t.INT8, [int8_pix[0]], [int8_pix[1]]),
        _tensor("heat", [1, gh, gw, 1], t.INT8, [HEAT_SCALE], [HEAT_ZP]),
        _tensor("box", [1, gh, gw, 4], t.INT8, [BOX_SCALE], [BOX_ZP]),
    ]
    image_shape = [1, height, width, 3]
    codes = [_opcode(schema.BuiltinOperator.AVERAGE_POOL_2D, 2)]
    codes.append(_opcode(schema.BuiltinOperator.CONV_2D, 3))
    pool_kind, conv_kind = schema.BuiltinOptions.Pool2DOptions, schema.BuiltinOptions.Conv2DOptions
    ops = []
    if input_dtype == "uint8":
        tensors.append(_tensor("image", image_shape, t.UINT8, [PIXEL_SCALE], [0]))
        tensors.append(_tensor("image_q", image_shape, t.INT8, [int8_pix[0]], [int8_pix[1]]))
        codes.append(_opcode(schema.BuiltinOperator.QUANTIZE, 2))
        options = schema.QuantizeOptionsT()
        ops.append(_op(2, [7], [8], schema.BuiltinOptions.QuantizeOptions, options))
        image, pool_in = 7, 8
    else:
        tensors.append(_tensor("image", image_shape, t.INT8, [int8_pix[0]], [int8_pix[1]]))
        image = pool_in = 7
    ops.append(_op(0, [pool_in], [4], pool_kind, _pool_options(s)))
    ops.append(_op(1, [4, 0, 1], [5], conv_kind, _conv_options()))
    ops.append(_op(1, [4, 2, 3], [6], conv_kind, _conv_options()))
    graph = schema.SubGraphT()
    graph.tensors, graph.operators, graph.name = tensors, ops, "main"
    graph.inputs, graph.outputs = [image], [5, 6]
    model = schema.ModelT()
    model.version, model.description = 3, "roadnode test plate detector"
    model.operatorCodes, model.subgraphs, model.buffers = codes, [graph], buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
