"""The preprocessing contract: what a network expects between an image file and its input tensor.

An image becomes a network's input in fixed steps: convert to `channels`
(PIL "L" or "RGB"; alpha is dropped), resize to `size` (height, width) with
`interpolation`, multiply the 8-bit pixels by `scale` (1/255, so [0, 1]),
subtract `mean` and divide by `std` per channel, lay out as `layout` (NCHW)
float32. `Preprocessing` records those steps; `name` says where the numbers
came from (`none`: raw [0, 1], `imagenet`, `dataset`: the training split's
statistics, `custom`).

Every network carries one:
- datasets hold raw [0, 1] images (compressor.data.datasets) and each
  consumer normalises them once per tensor set with its own preprocessing
  (`normalise`): the teacher with the teacher's, a student with its own;
- a compressor checkpoint stores it (`Checkpoint.preprocessing`);
- ONNX files carry it in `metadata_props` under `METADATA_PREPROCESSING` (this
  dataclass as JSON) and the class names under `METADATA_CLASS_NAMES` (a JSON
  list). The keys always describe the graph's *input*: an exported artifact
  folds its normalisation into the graph and so records `none` (raw [0, 1]);
  read back as a teacher it is then fed exactly what it expects.

`PreprocessChoice` is what a user asks for (`--teacher-preprocess none |
imagenet | dataset | mean=A,B,C,std=D,E,F`); `resolve` turns it into a
`Preprocessing` for a network's input size and channels. This module imports
no heavy library (the CLI parser uses it); torch is imported where tensors are
touched.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from compressor.errors import UserError

FORMAT = "compressor-preprocessing/1"
METADATA_PREPROCESSING = "compressor.preprocessing"
METADATA_CLASS_NAMES = "compressor.class_names"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHOICES = ("none", "imagenet", "dataset")
CHOICE_HELP = ("none (raw pixels in [0, 1]), imagenet (ImageNet mean/std), dataset (the training split's mean/std) "
               "or mean=A,B,C,std=D,E,F (per channel)")
INTERPOLATIONS = ("bilinear", "nearest", "bicubic")


@dataclass(frozen=True)
class Preprocessing:
    """How pixels become a network's input (see the module docstring)."""

    size: tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = "custom"
    scale: float = 1 / 255
    interpolation: str = "bilinear"
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise UserError(f"preprocessing: channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise UserError(f"preprocessing: mean and std need {self.channels} value(s) each (one per channel), got "
                            f"mean={list(self.mean)} std={list(self.std)}")
        if any(not s > 0 for s in self.std):
            raise UserError(f"preprocessing: every std must be > 0, got {list(self.std)}")
        if self.interpolation not in INTERPOLATIONS or self.layout != "NCHW":
            raise UserError(f"preprocessing: interpolation must be one of {', '.join(INTERPOLATIONS)} and layout NCHW, "
                            f"got {self.interpolation!r} and {self.layout!r}")

    @classmethod
    def raw(cls, size: tuple[int, int], channels: int) -> "Preprocessing":
        """Raw pixels scaled to [0, 1]: what an exported artifact takes."""
        return cls(size=tuple(size), channels=channels, mean=(0.0,) * channels, std=(1.0,) * channels, name="none")

    @property
    def is_identity(self) -> bool:
        return all(m == 0.0 for m in self.mean) and all(s == 1.0 for s in self.std)

    def describe(self) -> str:
        """One line: name, the numbers, the size."""
        numbers = "raw pixels / 255" if self.is_identity else (
            f"(pixels / 255 - mean {_fmt(self.mean)}) / std {_fmt(self.std)}")
        return f"{self.name}: {numbers}, {self.size[0]}x{self.size[1]} px, {self.channels} channel(s)"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"format": FORMAT, **data, "size": list(self.size), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "preprocessing") -> "Preprocessing":
        """Parse `to_dict`'s output; a malformed record is a one-line `UserError` naming `where`."""
        try:
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError(f"expected a {FORMAT} record")
            return cls(size=(int(data["size"][0]), int(data["size"][1])), channels=int(data["channels"]),
                       mean=tuple(float(v) for v in data["mean"]), std=tuple(float(v) for v in data["std"]),
                       name=str(data.get("name", "custom")), scale=float(data.get("scale", 1 / 255)),
                       interpolation=str(data.get("interpolation", "bilinear")),
                       layout=str(data.get("layout", "NCHW")))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise UserError(f"{where}: not a valid preprocessing record ({exc})") from None

    def metadata_props(self, class_names: list[str] | None = None) -> dict[str, str]:
        """The ONNX `metadata_props` entries describing this input (and the class names, in output order)."""
        props = {METADATA_PREPROCESSING: json.dumps(self.to_dict(), sort_keys=True)}
        if class_names is not None:
            props[METADATA_CLASS_NAMES] = json.dumps(list(class_names))
        return props

    def normalise(self, x):
        """(x - mean) / std per channel for raw [0, 1] images x (N, C, H, W); x itself when the identity."""
        import torch

        if self.is_identity:
            return x
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std


def from_metadata(props: dict[str, str], where: str) -> Preprocessing | None:
    """The preprocessing recorded in an ONNX file's `metadata_props`, or None when it records none."""
    text = props.get(METADATA_PREPROCESSING)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: metadata {METADATA_PREPROCESSING!r} is not JSON ({exc})") from None
    return Preprocessing.from_dict(data, f"{where}: metadata {METADATA_PREPROCESSING!r}")


@dataclass(frozen=True)
class PreprocessChoice:
    """What the user asked for: a named choice, or explicit per-channel numbers (`kind` "custom")."""

    kind: str
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "PreprocessChoice":
        text = text.strip()
        if text.lower() in CHOICES:
            return cls(text.lower())
        match = re.fullmatch(r"mean=([^=;]+?)[,;]\s*std=([^=;]+)", text)
        if match is None:
            raise UserError(f"--teacher-preprocess {text!r}: use {CHOICE_HELP}")
        try:
            mean, std = (tuple(float(v) for v in part.split(",") if v.strip()) for part in match.groups())
        except ValueError:
            raise UserError(f"--teacher-preprocess {text!r}: mean and std must be numbers, e.g. "
                            "mean=0.5,0.5,0.5,std=0.25,0.25,0.25") from None
        if not mean or not std:
            raise UserError(f"--teacher-preprocess {text!r}: mean and std need at least one value each")
        return cls("custom", mean, std)

    def resolve(self, size: tuple[int, int], channels: int, dataset_stats: tuple[tuple[float, ...], tuple[float, ...]],
                ) -> Preprocessing:
        """The `Preprocessing` for a network taking `size` and `channels`.

        Args:
            dataset_stats: (mean, std) per channel of the raw training split at this size and channels.
        """
        if self.kind == "none":
            return Preprocessing.raw(size, channels)
        if self.kind == "dataset":
            mean, std = dataset_stats
        elif self.kind == "imagenet":
            # Gray inputs: the average of ImageNet's channels.
            mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (
                (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,))
        else:
            mean, std = self.mean, self.std
            if len(mean) == 1 and len(std) == 1:
                mean, std = mean * channels, std * channels
        return Preprocessing(size=tuple(size), channels=channels, mean=tuple(mean), std=tuple(std), name=self.kind)


def normalising(model, preprocessing: Preprocessing):
    """`model` behind a layer that normalises raw [0, 1] inputs: what every export ships."""
    import torch

    class Normalised(torch.nn.Module):
        """Raw [0, 1] pixels in, the wrapped network's logits out."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(preprocessing.mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(preprocessing.std, dtype=torch.float32).view(1, -1, 1, 1))

        def forward(self, x):
            # The same arithmetic as `Preprocessing.normalise`, which the student was trained on.
            return self.model((x - self.mean) / self.std)

    return Normalised().eval()


def _fmt(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:.4g}" for v in values)
