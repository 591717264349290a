"""Datasets as in-memory tensors with fixed, seeded, stratified splits.

Sources (`--data`):
- `digits` (default): scikit-learn's bundled 8x8 handwritten digits (1,797
  real images, no download), upsampled bilinearly to `image_size` (32 px by
  default), gray repeated to `channels`.
- `digits-cluttered`: the same digits scaled, rotated and placed on a 32 px
  canvas among clutter cut from other digits (compressor.data.cluttered);
  split by source image with the split seed, so no digit crosses splits. A
  harder set, where a search and distillation have room to show their worth.
- `imagefolder:PATH`: torchvision's ImageFolder layout; with `train/` and
  `val/` subfolders those are used (val split in half into val and test),
  otherwise the whole folder is split 60/20/20.
- `npz:PATH`: arrays `x` (N,H,W | N,H,W,C | N,C,H,W) and `y` (N,), split 60/20/20.
- `cifar10`, `cifar100`, `mnist`, `fashionmnist`: torchvision datasets read
  from `--data-root`; nothing is downloaded unless `--download` is given.

Every source becomes a `Dataset` of raw float32 images in [0, 1] (8-bit
pixels / 255; `npz` arrays of uint8 are scaled, floats are taken as they are
unless they exceed 1.5, then as 0-255). Normalisation is not baked in: it
belongs to the network that consumes the images (compressor.models.preprocessing).
`Dataset.normalised(pre)` applies one preprocessing once to every split and
returns a new `Dataset` (the trainer then indexes ready tensors, no per-batch
work); `student_preprocessing()` is the default for students, the training
split's per-channel mean and std. A teacher that takes another size or
channel count gets its images from `at_size`, which reads the source again
with the same split seed (so the same images land in the same splits, in the
same order, which it checks). The data are small enough to hold in memory,
which keeps training free of DataLoader workers (the search trains hundreds
of candidates on two cores).

ImageFolder: `root/CLASS/IMAGE` (any PIL format; grayscale, RGB, RGBA and
palette images are converted to `--channels`, alpha dropped), or `train/`
and `val/` (and optionally `test/`) sub-folders with the same class folders;
without `test/`, `val/` is split in half into val and test. Class names are
the folder names in sorted order, the order of the model's outputs. Images
of any size are resized (stretched) to `image_size` x `image_size` with PIL's
bilinear filter, exactly what an exported model's DEPLOY.md tells a deployer
to do.

`identity` hashes what determines the tensors (source, split seed, size,
channels, and the preprocessing once normalised) and keys the teacher-logits
cache; `label_fraction` hides labels of all but a stratified fraction of the
training split (`y = -1`) without changing the images, so it is not part of
the identity.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.errors import UserError
from compressor.models.preprocessing import Preprocessing

TORCHVISION_SETS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "mnist": "MNIST", "fashionmnist": "FashionMNIST"}
SPLIT = (0.6, 0.2, 0.2)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Dataset:
    """Train/val/test tensors in memory (images float32 (N,C,H,W), labels int64 (N,)).

    The images are raw [0, 1] unless `preprocessing` says which normalisation was applied to them.
    """

    name: str
    identity: str
    num_classes: int
    input_shape: tuple[int, int, int]
    train_x: Any
    train_y: Any
    val_x: Any
    val_y: Any
    test_x: Any
    test_y: Any
    class_names: list[str] = field(default_factory=list)
    label_fraction: float = 1.0
    # Which images are train/val/test (source and split seed, not the preprocessing): a teacher records
    # it, so that using the teacher on another split, whose test images it may have trained on, is flagged.
    split_identity: str = ""
    # Per-channel mean and std of the raw training split: the student's default normalisation.
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    preprocessing: Preprocessing | None = None
    # load_dataset's arguments, so that `at_size` reads the same source with the same split again.
    load_args: dict[str, Any] = field(default_factory=dict)
    # The raw dataset a normalised one was made from (None for a raw one): a teacher's inputs start there.
    raw: "Dataset | None" = field(default=None, repr=False)

    def as_raw(self) -> "Dataset":
        """The raw [0, 1] images of this dataset (itself when it is raw)."""
        return self.raw if self.raw is not None else self

    def student_preprocessing(self) -> Preprocessing:
        """The training split's statistics at this size: how students are normalised by default."""
        return Preprocessing(size=tuple(self.input_shape[1:]), channels=self.input_shape[0], mean=self.mean,
                             std=self.std, name="dataset")

    def normalised(self, preprocessing: Preprocessing) -> "Dataset":
        """The same images with `preprocessing` applied to every split (once); `identity` includes it."""
        import dataclasses

        if self.preprocessing is not None:
            raise ValueError("normalised() needs the raw dataset, this one is already normalised")
        if (preprocessing.channels, *preprocessing.size) != tuple(self.input_shape):
            raise ValueError(f"preprocessing for {preprocessing.channels}x{preprocessing.size} applied to images "
                             f"of shape {self.input_shape}")
        identity = hashlib.sha256(json.dumps([self.identity, preprocessing.to_dict()],
                                             sort_keys=True).encode()).hexdigest()[:16]
        return dataclasses.replace(
            self, identity=identity, preprocessing=preprocessing, raw=self, train_x=preprocessing.normalise(self.train_x),
            val_x=preprocessing.normalise(self.val_x), test_x=preprocessing.normalise(self.test_x))

    def at_size(self, image_size: int, channels: int) -> "Dataset":
        """The same images, splits and order at another size or channel count (the raw source read again)."""
        import dataclasses

        import torch

        if tuple(self.input_shape) == (channels, image_size, image_size):
            return self
        if self.preprocessing is not None:
            raise ValueError("at_size() needs the raw dataset")
        other = load_dataset(**{**self.load_args, "image_size": image_size, "channels": channels})
        same = other.split_identity == self.split_identity and all(
            torch.equal(getattr(other, k), getattr(self, k)) for k in ("train_y", "val_y", "test_y"))
        if not same:
            raise UserError(f"{self.name}: reading the data again at {image_size} px gave other splits; "
                            "the source changed while it was read")
        return dataclasses.replace(other, label_fraction=self.label_fraction)


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """The data flags shared by train-teacher, distill, compress and export."""
    parser.add_argument("--data", default="digits",
                        help="digits (bundled), digits-cluttered (bundled, harder), imagefolder:PATH, npz:PATH, or cifar10|cifar100|mnist|fashionmnist "
                             "(default digits)")
    parser.add_argument("--data-root", help="folder holding torchvision datasets")
    parser.add_argument("--download", action="store_true", help="allow torchvision datasets to download")
    parser.add_argument("--image-size", type=int, default=32, help="resize images to this size (default 32)")
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3), help="image channels (default 3)")
    parser.add_argument("--label-fraction", type=float, default=1.0,
                        help="keep labels for this stratified fraction of the training split; KD still uses every "
                             "image (default 1.0)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split (default 0)")


def dataset_from_args(args: argparse.Namespace) -> Dataset:
    return load_dataset(args.data, image_size=args.image_size, channels=args.channels, seed=args.split_seed,
                        data_root=args.data_root, download=args.download, label_fraction=args.label_fraction)


def load_dataset(ref: str = "digits", *, image_size: int | None = 32, channels: int | None = 3, seed: int = 0,
                 data_root: str | None = None, download: bool = False, label_fraction: float = 1.0) -> Dataset:
    """Load a dataset by reference (see the module docstring).

    Raises:
        UserError: missing files, empty folders, mixed image sizes without a resize, bad arrays.
    """
    if not 0.0 < label_fraction <= 1.0:
        raise UserError(f"--label-fraction must be in (0, 1], got {label_fraction}")
    if channels not in (None, 1, 3):
        raise UserError(f"--channels must be 1 or 3, got {channels}")
    if image_size is not None and image_size < 8:
        raise UserError(f"--image-size must be >= 8, got {image_size}")
    if ref == "digits":
        (x, y), names, splits = _digits(), [str(i) for i in range(10)], None
    elif ref == "digits-cluttered":
        from compressor.data.cluttered import render_splits

        x, y, names, splits = None, None, [str(i) for i in range(10)], render_splits(seed)
    elif ref.startswith("imagefolder:"):
        x, y, names, splits = _imagefolder(Path(ref.split(":", 1)[1]), image_size, channels)
    elif ref.startswith("npz:"):
        (x, y), names, splits = _npz(Path(ref.split(":", 1)[1])), None, None
    elif ref.lower() in TORCHVISION_SETS:
        x, y, names, splits = _torchvision(ref.lower(), data_root, download)
    else:
        raise UserError(f"unknown dataset {ref!r}; use digits, digits-cluttered, imagefolder:PATH, npz:PATH or "
                        f"{', '.join(TORCHVISION_SETS)}")
    dataset = _finish(ref, x, y, names, splits, image_size=image_size, channels=channels, seed=seed,
                      label_fraction=label_fraction)
    dataset.load_args = {"ref": ref, "image_size": image_size, "channels": channels, "seed": seed,
                         "data_root": data_root, "download": download, "label_fraction": label_fraction}
    return dataset


def _digits():
    import numpy as np
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32)[:, None] / 16.0, bunch.target.astype(np.int64)


def _npz(path: Path):
    import numpy as np

    if not path.is_file():
        raise UserError(f"npz:{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays or "y" not in arrays:
                raise UserError(f"npz:{path}: needs arrays named 'x' and 'y', found {', '.join(arrays.files)}")
            x, y = arrays["x"], arrays["y"]
    except (ValueError, OSError) as exc:
        raise UserError(f"npz:{path}: not a readable .npz without pickled objects ({exc})") from None
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise UserError(f"npz:{path}: expected x of shape (N,H,W[,C]) and y of shape (N,), got {x.shape} and {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise UserError(f"npz:{path}: y must hold class indices (integers >= 0), got dtype {y.dtype}")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.integer):
        raise UserError(f"npz:{path}: x of dtype {x.dtype}; use uint8 pixels (0-255) or floats in [0, 1]")
    else:
        x = x.astype(np.float32)
        if x.max() > 1.5:  # floats holding 0-255 pixel values
            x = x / 255.0
    return x, y.astype(np.int64)


def _imagefolder(path: Path, image_size: int | None, channels: int | None):
    import numpy as np

    if not path.is_dir():
        raise UserError(f"imagefolder:{path}: no such folder")
    if (path / "train").is_dir() and (path / "val").is_dir():
        parts = [path / "train", path / "val"] + ([path / "test"] if (path / "test").is_dir() else [])
    else:
        parts = [path]
    classes = sorted(d.name for d in parts[0].iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UserError(f"imagefolder:{path}: no class sub-folders (expected {path}/CLASS/IMAGE.png)")
    for part in parts[1:]:
        extra = sorted({d.name for d in part.iterdir() if d.is_dir()} - set(classes))
        if extra:
            raise UserError(f"imagefolder:{part}: class folder(s) {', '.join(extra)} not in {parts[0]}; "
                            "every split needs the training split's classes")
    loaded = []
    for part in parts:
        xs, ys = [], []
        for label, name in enumerate(classes):
            files = sorted(f for f in (part / name).glob("*") if f.suffix.lower() in IMAGE_SUFFIXES) \
                if (part / name).is_dir() else []
            if not files and part == parts[0]:
                raise UserError(f"imagefolder:{part / name}: no images (every class needs at least one)")
            for file in files:
                xs.append(_read_image(file, image_size, channels))
                ys.append(label)
        if not xs:
            raise UserError(f"imagefolder:{part}: no images found")
        if len({a.shape for a in xs}) > 1:
            raise UserError(f"imagefolder:{part}: images of mixed sizes; pass --image-size N to resize them")
        x = np.stack(xs)
        loaded.append((x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2), np.asarray(ys, dtype=np.int64)))
    if len(loaded) == 1:
        return loaded[0][0], loaded[0][1], classes, None
    return None, None, classes, loaded


def _read_image(file: Path, image_size: int | None, channels: int | None):
    """One image as float32 (H, W) or (H, W, 3) in [0, 1]: converted to L or RGB, then resized bilinearly."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image_size is not None:
                image = image.resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(image, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"imagefolder: {file}: not a readable image ({str(exc).splitlines()[0][:120]})") from None


def _torchvision(name: str, data_root: str | None, download: bool):
    import numpy as np
    import torchvision

    if data_root is None and not download:
        raise UserError(f"{name}: pass --data-root DIR containing the torchvision {TORCHVISION_SETS[name]} files, "
                        "or --download to fetch them")
    cls = getattr(torchvision.datasets, TORCHVISION_SETS[name])
    root = data_root or str(Path.home() / ".cache" / "compressor" / "datasets")
    try:
        train, test = cls(root, train=True, download=download), cls(root, train=False, download=download)
    except RuntimeError as exc:
        raise UserError(f"{name}: {exc} (pass --data-root DIR with the files, or --download)") from None

    def arrays(ds):
        x = np.asarray(ds.data, dtype=np.float32) / 255.0
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return x, np.asarray(ds.targets, dtype=np.int64)

    return None, None, list(train.classes), [arrays(train), arrays(test)]


def _finish(ref, x, y, names, splits, *, image_size, channels, seed, label_fraction) -> Dataset:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.model_selection import train_test_split

    if splits is None:
        if len(x) < 10:
            raise UserError(f"{ref}: only {len(x)} samples; need at least 10 to split into train/val/test")
        index = np.arange(len(y))
        train_i, rest = train_test_split(index, train_size=SPLIT[0], random_state=seed, stratify=_stratify(y, 3))
        val_i, test_i = train_test_split(rest, test_size=0.5, random_state=seed, stratify=_stratify(y[rest], 2))
        parts = [(x[i], y[i]) for i in (train_i, val_i, test_i)]
    elif len(splits) == 3:
        parts = list(splits)
    else:
        (train_x, train_y), (held_x, held_y) = splits
        if ref.lower() in TORCHVISION_SETS:
            # torchvision sets: their test split is the test split; validation comes out of train.
            train_i, val_i = train_test_split(np.arange(len(train_y)), test_size=0.1, random_state=seed,
                                              stratify=train_y)
            parts = [(train_x[train_i], train_y[train_i]), (train_x[val_i], train_y[val_i]), (held_x, held_y)]
        else:
            if len(held_y) < 2:
                raise UserError(f"{ref}: the val folder holds {len(held_y)} image(s); need at least 2 to split it "
                                "into val and test (or add a test/ folder)")
            val_i, test_i = train_test_split(np.arange(len(held_y)), test_size=0.5, random_state=seed,
                                             stratify=_stratify(held_y, 2))
            parts = [(train_x, train_y), (held_x[val_i], held_y[val_i]), (held_x[test_i], held_y[test_i])]
    num_classes = len(names) if names else int(max(int(p[1].max()) for p in parts) + 1)
    if names is None:
        names = [str(i) for i in range(num_classes)]
    tensors = []
    for px, py in parts:
        t = torch.from_numpy(np.ascontiguousarray(px))
        if channels is not None and t.shape[1] != channels:
            t = t.mean(1, keepdim=True).repeat(1, channels, 1, 1) if t.shape[1] != 1 else t.repeat(1, channels, 1, 1)
        if image_size is not None and tuple(t.shape[2:]) != (image_size, image_size):
            t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", align_corners=False)
        tensors.append((t.float(), torch.from_numpy(np.ascontiguousarray(py)).long()))
    mean = tensors[0][0].mean(dim=(0, 2, 3))
    std = tensors[0][0].std(dim=(0, 2, 3)).clamp_min(1e-6) if len(tensors[0][0]) > 1 else torch.ones_like(mean)
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = tensors
    if label_fraction < 1.0:
        train_y = train_y.clone()
        keep_n = max(num_classes, int(round(label_fraction * len(train_y))))
        keep, _ = train_test_split(np.arange(len(train_y)), train_size=keep_n, random_state=seed,
                                   stratify=train_y.numpy())
        hidden = np.ones(len(train_y), dtype=bool)
        hidden[keep] = False
        train_y[torch.from_numpy(hidden)] = -1
    split = {"source": _source_key(ref), "seed": seed, "n": [len(p[1]) for p in parts]}
    identity = hashlib.sha256(json.dumps({**split, "image_size": image_size, "channels": channels},
                                         sort_keys=True).encode()).hexdigest()[:16]
    split_identity = hashlib.sha256(json.dumps(split, sort_keys=True).encode()).hexdigest()[:16]
    return Dataset(name=ref, identity=identity, num_classes=num_classes, input_shape=tuple(train_x.shape[1:]),
                   train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, test_x=test_x, test_y=test_y,
                   class_names=list(names), label_fraction=label_fraction, split_identity=split_identity,
                   mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))


def _stratify(labels, minimum: int):
    """`labels` for a stratified split when every class present has `minimum` samples, else None (random split)."""
    import numpy as np

    return labels if np.unique(labels, return_counts=True)[1].min() >= minimum else None


def _source_key(ref: str) -> str:
    """The dataset's source, with file contents hashed so that an edited file is a new dataset."""
    for prefix in ("npz:",):
        if ref.startswith(prefix):
            return prefix + hashlib.sha256(Path(ref[len(prefix):]).read_bytes()).hexdigest()
    if ref.startswith("imagefolder:"):
        root = Path(ref.split(":", 1)[1])
        listing = sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                         for p in root.rglob("*") if p.is_file())
        return "imagefolder:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    if ref == "digits-cluttered":
        from compressor.data.cluttered import ClutterConfig

        return "digits-cluttered:" + json.dumps(ClutterConfig().key(), sort_keys=True)
    return ref.lower()
