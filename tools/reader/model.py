"""The plate reader network: a small CRNN-style recogniser with a CTC head, in Keras.

Input (32, 128, 1) grey in 0 … 1. Five 3x3 convolutions (16, 32, 64, 64, 96 channels, batch
norm, ReLU) with pooling 2x2, 2x2, 2x1, 2x1 make a (2, 32, 96) map; a (2, 1) convolution folds
the height away, two width-only convolutions (kernel 3, 128) give each of the 32 time steps
context from its neighbours, and a dense softmax gives per-step probabilities over the blank
(class 0) and the 36 letters and digits. No recurrent layer: everything is an int8-friendly
convolution, so the TFLite model is full-integer. About 0.2 M parameters, ~30 M MACs.
"""

from __future__ import annotations

from typing import Any

from node.plates.grammar import ALPHABET

CLASSES = len(ALPHABET) + 1  # blank first


def build(height: int = 32, width: int = 128, softmax: bool = True) -> Any:
    import keras
    from keras import layers

    x_in = keras.Input((height, width, 1), name="row")
    x = x_in

    def block(x: Any, ch: int, name: str) -> Any:
        x = layers.Conv2D(ch, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    x = block(x, 16, "c1")
    x = layers.MaxPooling2D((2, 2), name="p1")(x)  # 16 x 64
    x = block(x, 32, "c2")
    x = layers.MaxPooling2D((2, 2), name="p2")(x)  # 8 x 32
    x = block(x, 64, "c3")
    x = block(x, 64, "c4")
    x = layers.MaxPooling2D((2, 1), name="p3")(x)  # 4 x 32
    x = block(x, 96, "c5")
    x = layers.MaxPooling2D((2, 1), name="p4")(x)  # 2 x 32
    x = layers.Conv2D(128, (2, 1), padding="valid", name="fold")(x)  # 1 x 32
    x = layers.ReLU(name="fold_relu")(x)
    x = layers.Reshape((width // 4, 128), name="seq")(x)
    x = layers.Conv1D(128, 3, padding="same", activation="relu", name="ctx1")(x)
    x = layers.Conv1D(128, 3, padding="same", activation="relu", name="ctx2")(x)
    x = layers.Dense(CLASSES, name="logits")(x)
    if softmax:
        x = layers.Softmax(name="probs")(x)
    return keras.Model(x_in, x, name="reader")
