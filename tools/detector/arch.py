"""The detector's shape, shared by the Keras model, the PyTorch mirror and the targets
(no framework imports here)."""

STRIDE = 4
FORMAT = "centernet-ltrb-log/v1"

# (channels, stride, repeats) per stage after the stem (which is already at stride 4); each
# stage is one block at `stride` and `repeats` plain ones.
STAGES: tuple[tuple[int, int, int], ...] = ((24, 1, 1), (40, 2, 1), (64, 2, 2), (96, 2, 1))
NECK = 24
