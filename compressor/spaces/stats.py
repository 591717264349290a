"""Static size of a built network: parameters and multiply-accumulates (MACs).

MACs count convolutions and linear layers (what dominates a CNN's compute),
measured with forward hooks on one sample of the real input shape
(`profilers.backends.torch_eager.count_macs`, the same counter the torch profiler
uses), so strides and the small-image stem are accounted for exactly.
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

    from profilers.backends.torch_eager import count_macs as count_forward_macs

    was_training = model.training
    model.eval()
    try:
        return count_forward_macs(model, torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
