"""Zoo block tables -> torch networks, assembled from torchvision's own blocks.

Small-input adaptation (inputs up to 64 px): torchvision's stems cut a
224 px image by 4 (stride-2 conv + stride-2 max-pool or block) before the
first stage, which leaves a 32 px image at 1x1 by the last stage and is what
made stock `mobilenet_v3_small` collapse on 32 px digits. Here the stem keeps
the resolution (stride 1, no max-pool) and the first stride-2 block of the
MobileNets runs at stride 1, so a 32 px input ends at 4x4 (total stride 8).
Larger inputs get torchvision's strides (total 32; 16 for `plain`).

MobileNetV3 also uses BatchNorm momentum 0.01 (tuned for ImageNet-length
training); a student trained for a few epochs then evaluates with running
statistics that have not caught up, so the adapted version uses the default
momentum 0.1.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual as MobileNetV2Block
from torchvision.models.mobilenetv3 import InvertedResidualConfig, MobileNetV3
from torchvision.models.resnet import BasicBlock
from torchvision.models.shufflenetv2 import InvertedResidual as ShuffleUnit
from torchvision.ops.misc import Conv2dNormActivation

SMALL_IMAGE_MAX_PX = 64


def _is_small(input_shape: tuple[int, int, int]) -> bool:
    return max(input_shape[1:]) <= SMALL_IMAGE_MAX_PX


def _init(module: nn.Module) -> None:
    """torchvision's initialisation for the layers we add or replace."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Classifier(nn.Sequential):
    """Global average pool -> flatten -> (dropout) -> linear."""

    def __init__(self, in_ch: int, num_classes: int, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers, nn.Linear(in_ch, num_classes))


def build_plain(r: dict, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    layers: list[nn.Module] = []
    in_ch = input_shape[0]
    for stage, (width, convs) in enumerate(zip(r["widths"], r["convs"])):
        if stage > 0:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        for i in range(convs):
            # Large images: the first conv strides by 2 and a max-pool follows (stem at 1/4 resolution).
            stride = 2 if stage == 0 and i == 0 and not _is_small(input_shape) else 1
            layers.append(Conv2dNormActivation(in_ch, width, 3, stride))
            in_ch = width
        if stage == 0 and not _is_small(input_shape):
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
    net = nn.Sequential(nn.Sequential(*layers), Classifier(in_ch, num_classes))
    _init(net)
    return net


def build_mobilenet_v2(r: dict, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    small = _is_small(input_shape)
    layers: list[nn.Module] = [Conv2dNormActivation(input_shape[0], r["stem_width"], 3, 1 if small else 2, activation_layer=nn.ReLU6)]
    in_ch = r["stem_width"]
    first_stride_two = True
    for expand, out_ch, repeats, stride in r["blocks"]:
        if stride == 2 and small and first_stride_two:
            stride, first_stride_two = 1, False
        for i in range(repeats):
            layers.append(MobileNetV2Block(in_ch, out_ch, stride if i == 0 else 1, expand_ratio=expand))
            in_ch = out_ch
    layers.append(Conv2dNormActivation(in_ch, r["last_channel"], 1, activation_layer=nn.ReLU6))
    net = nn.Sequential(nn.Sequential(*layers), Classifier(r["last_channel"], num_classes, dropout=0.2))
    _init(net)
    return net


def build_mobilenet_v3(r: dict, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    small = _is_small(input_shape)
    configs = []
    first_stride_two = True
    for in_ch, kernel, expanded, out_ch, use_se, activation, stride in r["blocks"]:
        if stride == 2 and small and first_stride_two:
            stride, first_stride_two = 1, False
        # Channels are already scaled and divisible by 8: width 1.0 keeps them as they are.
        configs.append(InvertedResidualConfig(in_ch, kernel, expanded, out_ch, use_se, activation, stride, 1, 1.0))
    norm = partial(nn.BatchNorm2d, eps=0.001)
    net = MobileNetV3(configs, r["last_channel"], num_classes=num_classes, norm_layer=norm)
    # torchvision's stem takes 3 channels at stride 2; replace it with one for this input.
    net.features[0] = Conv2dNormActivation(
        input_shape[0], r["stem_width"], 3, 1 if small else 2, norm_layer=norm, activation_layer=nn.Hardswish
    )
    _init(net.features[0])
    return net


def build_resnet(r: dict, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    widths, depths = r["widths"], r["depths"]
    if _is_small(input_shape):
        stem: list[nn.Module] = [Conv2dNormActivation(input_shape[0], widths[0], 3, 1)]
    else:
        stem = [Conv2dNormActivation(input_shape[0], widths[0], 7, 2), nn.MaxPool2d(3, 2, 1)]
    layers = list(stem)
    in_ch = widths[0]
    for stage, (width, depth) in enumerate(zip(widths, depths)):
        for i in range(depth):
            stride = 2 if stage > 0 and i == 0 else 1
            downsample = None
            if stride != 1 or in_ch != width:
                downsample = nn.Sequential(nn.Conv2d(in_ch, width, 1, stride, bias=False), nn.BatchNorm2d(width))
            layers.append(BasicBlock(in_ch, width, stride, downsample))
            in_ch = width
    net = nn.Sequential(nn.Sequential(*layers), Classifier(in_ch, num_classes))
    _init(net)
    # torchvision's zero_init_residual is off by default; keep its default here too.
    return net


def build_shufflenet_v2(r: dict, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    small = _is_small(input_shape)
    layers: list[nn.Module] = [Conv2dNormActivation(input_shape[0], r["stem_width"], 3, 1 if small else 2)]
    if not small:
        layers.append(nn.MaxPool2d(3, 2, 1))
    in_ch = r["stem_width"]
    for width, depth in zip(r["widths"], r["depths"]):
        layers.append(ShuffleUnit(in_ch, width, 2))
        layers += [ShuffleUnit(width, width, 1) for _ in range(depth - 1)]
        in_ch = width
    layers.append(Conv2dNormActivation(in_ch, r["last_width"], 1))
    net = nn.Sequential(nn.Sequential(*layers), Classifier(r["last_width"], num_classes))
    _init(net)
    return net


BUILDERS = {
    "plain": build_plain,
    "mobilenet_v2": build_mobilenet_v2,
    "mobilenet_v3_small": build_mobilenet_v3,
    "mobilenet_v3_large": build_mobilenet_v3,
    "resnet": build_resnet,
    "shufflenet_v2": build_shufflenet_v2,
}


def build_zoo(family: str, resolved: dict, input_shape: tuple[int, int, int], num_classes: int) -> torch.nn.Module:
    """Build a zoo family's network.

    Args:
        family: a key of `zoo.FAMILIES`.
        resolved: the spec's block table (validated against its params).
        input_shape: (C, H, W); inputs up to 64 px get the small-image stem.
        num_classes: classifier outputs.

    Returns:
        The network (training mode).
    """
    return BUILDERS[family](resolved, input_shape, num_classes)
