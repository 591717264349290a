"""Building a network from its architecture reference: the one place that maps `arch` strings to modules.

An `arch` is either `torchvision:NAME[:stem=small]` (a torchvision
classifier, random weights, `num_classes` outputs) or an ArchSpec (JSON text or a `zoo:`/`nago`
reference resolved by compressor.spaces). Checkpoints store exactly this
string next to the state dict, so `model_from_checkpoint` rebuilds the network
without executing anything from the file.

Small images and torchvision's stems: an ImageNet stem (ResNet's 7x7
stride-2 conv + stride-2 max-pool) shrinks a 28-32 px image 4x before the
first block, which cost a ResNet-18 teacher 30 points on a 28 px task (60.2%
vs 90.4%). `:stem=small` replaces the first conv by a 3x3 stride-1 conv and
drops a max-pool that follows it before the next conv (ResNet, DenseNet), as
the zoo space does for students (compressor.spaces.zoo_net, the same
`SMALL_IMAGE_MAX_PX` rule). `train-teacher` picks it for inputs of up to
that size and stores the choice in the arch string, so a checkpoint rebuilds
the network it was trained as; a bare `torchvision:NAME` is always the stock
network (pretrained ImageNet weights fit it).
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
        name, stem = parse_torchvision_arch(arch)
        return torchvision_model(name, num_classes, input_shape, stem=stem)
    spec = ArchSpec.from_json(arch) if arch.lstrip().startswith("{") else spec_from_ref(arch, seed=seed)
    return build_model(spec, tuple(input_shape), num_classes)


STEMS = ("imagenet", "small")


def parse_torchvision_arch(arch: str) -> tuple[str, str]:
    """`torchvision:NAME[:stem=small|imagenet]` -> (NAME, stem)."""
    name, _, option = arch.split(":", 1)[1].partition(":")
    stem = "imagenet"
    if option:
        key, _, value = option.partition("=")
        if key != "stem" or value not in STEMS:
            raise UserError(f"{arch!r}: the only option of a torchvision arch is :stem=small or :stem=imagenet")
        stem = value
    return name, stem


def torchvision_arch(name: str, stem: str) -> str:
    """The arch string a checkpoint stores for `name` with `stem` (bare for the stock stem)."""
    return f"torchvision:{name}" + (":stem=small" if stem == "small" else "")


def auto_stem(input_shape: tuple[int, ...]) -> str:
    """The stem for inputs of this size: the zoo's small-image rule."""
    from compressor.spaces.zoo_net import SMALL_IMAGE_MAX_PX

    return "small" if max(input_shape[1:]) <= SMALL_IMAGE_MAX_PX else "imagenet"


def torchvision_model(name: str, num_classes: int, input_shape: tuple[int, ...], stem: str = "imagenet"):
    """A torchvision classifier with random weights; its first conv adapted to the input's channels and `stem`."""
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
                _replace(model, module_name, torch.nn.Conv2d(channels, module.out_channels, module.kernel_size,
                                                             module.stride, module.padding, module.dilation, 1,
                                                             module.bias is not None))
                break
    if stem == "small":
        _small_stem(model)
    return model


def _small_stem(model) -> None:
    """First conv -> 3x3 stride 1; a max-pool between it and the next conv -> identity (in place)."""
    import torch

    first = None
    for module_name, module in list(model.named_modules()):
        if isinstance(module, torch.nn.Conv2d):
            if first is not None:
                break
            first = module_name
            _replace(model, module_name, torch.nn.Conv2d(module.in_channels, module.out_channels, 3, 1, 1,
                                                         bias=module.bias is not None))
        elif first is not None and isinstance(module, torch.nn.MaxPool2d):
            _replace(model, module_name, torch.nn.Identity())
    if first is None:
        raise UserError("stem=small: the network has no convolution to adapt")


def _replace(model, module_name: str, replacement) -> None:
    parent = model
    *path, leaf = module_name.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, leaf, replacement)


def model_from_checkpoint(ckpt):
    """Rebuild a checkpoint's network and load its weights (strictly: names and shapes must match)."""
    model = build_from_arch(ckpt.arch, ckpt.num_classes, ckpt.input_shape)
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        raise UserError(f"checkpoint weights do not match its architecture: {first_line(exc, 200)}") from None
    return model.eval()
