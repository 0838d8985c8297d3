"""The plate detector network: a small MobileNet-style U-shaped CenterNet.

Stem: space-to-depth by 4 (each 4x4 RGB patch becomes 48 channels) and a 1x1 convolution:
nothing runs at full or half resolution, which is where a plain conv stem spent half the
time (measured: 19.6 → 10.8 ms per 960x544 invoke on one thread, int8, XNNPACK).
Backbone: depthwise-separable blocks with ReLU6 (int8-friendly) down to stride 32, so the
receptive field covers plates up to most of the frame; a light top-down path (nearest upsample
+ add) brings that context back to stride 4, where two heads predict

- heat `[H/4, W/4, 1]`: plate-centre probability (sigmoid inside the model);
- box  `[H/4, W/4, 4]`: ln(distance / 4) to the left, top, right and bottom edges.

At stride 4 a 12 px plate still spans three cells; one head serves all sizes, so there is no
tiling and one invoke per frame. The contract is `centernet-ltrb-log/v1` (node/infer/decode.py).
Input: float RGB in [0, 1]; the int8 export takes uint8 0..255 (scale 1/255, zero point 0).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from tools.detector.arch import NECK, STAGES, STRIDE


def _conv_bn(x: Any, filters: int, kernel: int = 1, stride: int = 1, name: str = "") -> Any:
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(
        x
    )
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x)


def _sep(x: Any, filters: int, stride: int = 1, name: str = "") -> Any:
    """Depthwise 3x3 + pointwise 1x1, residual when shapes allow."""
    inp = x
    x = layers.DepthwiseConv2D(3, stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(name=f"{name}_dwbn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dwrelu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    x = layers.BatchNormalization(name=f"{name}_pwbn")(x)
    if stride == 1 and inp.shape[-1] == filters:
        x = layers.Add(name=f"{name}_add")([x, inp])
    return layers.ReLU(6.0, name=f"{name}_pwrelu")(x)


def _up2(t: Any) -> Any:
    """Nearest 2x upsampling as depth-to-space of four copies: the same function as
    `UpSampling2D(2, "nearest")`, but it exports to CONCATENATION + DEPTH_TO_SPACE, which
    keep no shapes, where Keras 3's upsampling exports to TILE + RESHAPE with the export's
    input size baked in. So the exported file runs at any input size (multiple of 32)."""
    import tensorflow as tf

    return tf.nn.depth_to_space(tf.concat([t, t, t, t], axis=-1), 2)


def build(input_shape: tuple[int | None, int | None, int] = (None, None, 3)) -> keras.Model:
    """The detector; `input_shape` fixed for export, free (None) for training on crops."""
    import tensorflow as tf

    inputs = keras.Input(input_shape, name="image")
    x = layers.Lambda(lambda t: tf.nn.space_to_depth(t, STRIDE), name="s2d")(inputs)  # /4
    x = _conv_bn(x, STAGES[0][0], name="stem")
    skips = []
    for s, (ch, stride, repeats) in enumerate(STAGES):
        x = _sep(x, ch, stride, name=f"s{s}b0")  # /4, /8, /16, /32
        for r in range(repeats):
            x = _sep(x, ch, 1, name=f"s{s}b{r + 1}")
        skips.append(x)
    x = _conv_bn(skips[-1], NECK, name="lat3")
    for level in (2, 1, 0):  # /16, /8, /4
        x = layers.Lambda(_up2, name=f"up{level}")(x)
        lateral = _conv_bn(skips[level], NECK, name=f"lat{level}")
        x = layers.Add(name=f"merge{level}")([x, lateral])
        x = _sep(x, NECK, 1, name=f"neck{level}")
    heat = layers.Conv2D(
        1, 1, activation="sigmoid", name="heat", bias_initializer=keras.initializers.Constant(-4.6)
    )(x)
    box = layers.Conv2D(4, 1, name="box")(x)
    return keras.Model(inputs, [heat, box], name="plates")
