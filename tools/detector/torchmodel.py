"""The detector network in PyTorch, layer for layer the same as `tools.detector.model`.

For training on a GPU when one is lent (`tools.detector.torchtrain`); the weights are then
copied into the Keras model (`keras_weights`) and exported by `tools.detector.export` exactly
as a CPU-trained model is. The two agree to float rounding: same layer names, TensorFlow's
"same" padding (stride 2 pads only bottom/right), TensorFlow's space-to-depth channel order,
batch-norm epsilon 1e-3.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from tools.detector.arch import NECK, STAGES, STRIDE

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # Keras momentum 0.99


def space_to_depth(x: torch.Tensor, block: int) -> torch.Tensor:
    """tf.nn.space_to_depth for NCHW: output channel = (dy * block + dx) * C + c."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // block, block, w // block, block)
    x = x.permute(0, 3, 5, 1, 2, 4)
    return x.reshape(n, block * block * c, h // block, w // block)


class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.bn(self.conv(x)))


class Sep(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.dw = nn.Conv2d(cin, cin, 3, stride, padding=0, groups=cin, bias=False)
        self.dwbn = nn.BatchNorm2d(cin, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.pwbn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (1, 1, 1, 1) if self.stride == 1 else (0, 1, 0, 1)  # TF "same", even sizes
        y = F.relu6(self.dwbn(self.dw(F.pad(x, pad))))
        y = self.pwbn(self.pw(y))
        return F.relu6(y + x if self.residual else y)


class Detector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict()
        self.blocks["stem"] = ConvBN(3 * STRIDE * STRIDE, STAGES[0][0])
        cin = STAGES[0][0]
        self.stage_names: list[list[str]] = []
        for s, (ch, stride, repeats) in enumerate(STAGES):
            names = [f"s{s}b0"] + [f"s{s}b{r + 1}" for r in range(repeats)]
            self.blocks[names[0]] = Sep(cin, ch, stride)
            for name in names[1:]:
                self.blocks[name] = Sep(ch, ch, 1)
            self.stage_names.append(names)
            cin = ch
        for level in range(len(STAGES)):
            self.blocks[f"lat{level}"] = ConvBN(STAGES[level][0], NECK)
        for level in (2, 1, 0):
            self.blocks[f"neck{level}"] = Sep(NECK, NECK, 1)
        self.heat = nn.Conv2d(NECK, 1, 1)
        self.box = nn.Conv2d(NECK, 4, 1)
        nn.init.constant_(self.heat.bias, -4.6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.blocks["stem"](space_to_depth(x, STRIDE))
        skips = []
        for names in self.stage_names:
            for name in names:
                x = self.blocks[name](x)
            skips.append(x)
        x = self.blocks["lat3"](skips[-1])
        for level in (2, 1, 0):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self.blocks[f"neck{level}"](x + self.blocks[f"lat{level}"](skips[level]))
        return torch.sigmoid(self.heat(x)), self.box(x)


def keras_weights(model: Detector) -> dict[str, list[np.ndarray[Any, Any]]]:
    """Per Keras layer name, the weight list `layer.set_weights` takes."""
    out: dict[str, list[np.ndarray[Any, Any]]] = {}

    def t(v: torch.Tensor) -> np.ndarray[Any, Any]:
        return v.detach().float().cpu().numpy()

    def bn(b: nn.BatchNorm2d) -> list[np.ndarray[Any, Any]]:
        assert b.running_mean is not None
        assert b.running_var is not None
        return [t(b.weight), t(b.bias), t(b.running_mean), t(b.running_var)]

    for name, block in model.blocks.items():
        if isinstance(block, ConvBN):
            out[f"{name}_conv"] = [t(block.conv.weight).transpose(2, 3, 1, 0)]
            out[f"{name}_bn"] = bn(block.bn)
        elif isinstance(block, Sep):
            out[f"{name}_dw"] = [t(block.dw.weight).transpose(2, 3, 0, 1)]
            out[f"{name}_dwbn"] = bn(block.dwbn)
            out[f"{name}_pw"] = [t(block.pw.weight).transpose(2, 3, 1, 0)]
            out[f"{name}_pwbn"] = bn(block.pwbn)
    for name, conv in (("heat", model.heat), ("box", model.box)):
        assert conv.bias is not None
        out[name] = [t(conv.weight).transpose(2, 3, 1, 0), t(conv.bias)]
    return out
