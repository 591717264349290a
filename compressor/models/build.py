"""Building a network from its architecture reference: the one place that maps `arch` strings to modules.

An `arch` is either `torchvision:NAME` (a torchvision classifier, random
weights, `num_classes` outputs) or an ArchSpec (JSON text or a `zoo:`/`nago`
reference resolved by compressor.spaces). Checkpoints store exactly this
string next to the state dict, so `model_from_checkpoint` rebuilds the network
without executing anything from the file.
"""

from __future__ import annotations

from targets.errors import UserError, first_line


def build_from_arch(arch: str, num_classes: int, input_shape: tuple[int, ...], seed: int = 0):
    """Build `arch` for inputs of shape (C, H, W) and `num_classes` outputs.

    Args:
        arch: `torchvision:NAME`, an ArchSpec JSON string, `zoo:...`, `nago`, or an ArchSpec JSON file path.
        num_classes: outputs of the classifier.
        input_shape: (C, H, W).
        seed: the family member to sample for a space reference (`zoo:...`, `nago`).

    Returns:
        A torch.nn.Module.
    """
    from compressor.spaces import ArchSpec, build_model, spec_from_ref

    if arch.startswith("torchvision:"):
        return torchvision_model(arch.split(":", 1)[1], num_classes, input_shape)
    spec = ArchSpec.from_json(arch) if arch.lstrip().startswith("{") else spec_from_ref(arch, seed=seed)
    return build_model(spec, tuple(input_shape), num_classes)


def torchvision_model(name: str, num_classes: int, input_shape: tuple[int, ...]):
    """A torchvision classifier with random weights; its first conv adapted to the input's channels."""
    import torch
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        close = [n for n in available if n.startswith(name[:4])][:8] or available[:8]
        raise UserError(f"unknown torchvision architecture {name!r}; e.g. {', '.join(close)}")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    channels = input_shape[0]
    if channels != 3:
        # Grayscale (or other) inputs: replace the first conv, keeping its geometry.
        for module_name, module in model.named_modules():
            if isinstance(module, torch.nn.Conv2d) and module.in_channels == 3:
                replacement = torch.nn.Conv2d(channels, module.out_channels, module.kernel_size, module.stride,
                                              module.padding, module.dilation, 1, module.bias is not None)
                parent = model
                *path, leaf = module_name.split(".")
                for part in path:
                    parent = getattr(parent, part)
                setattr(parent, leaf, replacement)
                break
    return model


def model_from_checkpoint(ckpt):
    """Rebuild a checkpoint's network and load its weights (strictly: names and shapes must match)."""
    model = build_from_arch(ckpt.arch, ckpt.num_classes, ckpt.input_shape)
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        raise UserError(f"checkpoint weights do not match its architecture: {first_line(exc, 200)}") from None
    return model.eval()
