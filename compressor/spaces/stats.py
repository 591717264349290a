"""Static size of a built network: parameters and multiply-accumulates (MACs).

MACs count convolutions and linear layers (what dominates a CNN's compute),
measured with forward hooks on one sample of the real input shape, so strides
and the small-image stem are accounted for exactly.
"""

from __future__ import annotations


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model, input_shape: tuple[int, int, int]) -> int:
    """MACs of one forward pass on a single (C, H, W) input (convs and linear layers).

    Args:
        model: a torch.nn.Module.
        input_shape: (C, H, W).

    Returns:
        Multiply-accumulates per image.
    """
    import torch
    from torch import nn

    total = 0

    def conv_hook(module: nn.Conv2d, _inputs, output) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += output.numel() * kernel

    def linear_hook(module: nn.Linear, _inputs, output) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total
