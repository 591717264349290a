"""Checkpoints: a state dict plus what rebuilds the network, loaded without unpickling.

A checkpoint is a `torch.save`d dict of plain data:
`{"format": "compressor-checkpoint/1", "state_dict": {...}, "arch": <ArchSpec JSON string or
"torchvision:NAME[:stem=small]">, "num_classes": int, "input_shape": [c, h, w], "meta": {...},
"preprocessing": <compressor.models.preprocessing.Preprocessing.to_dict() or absent>}`.
The preprocessing is what the network was trained on (its input contract);
checkpoints written before it was recorded have none, and their readers fall
back to the training split's statistics, which is what they were trained with.
It is always read with `torch.load(weights_only=True)`, so a file that
carries a pickled object (code) is refused, never executed.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from targets.errors import UserError, first_line

from compressor.models.preprocessing import Preprocessing

FORMAT = "compressor-checkpoint/1"


@dataclass
class Checkpoint:
    state_dict: dict[str, Any]
    arch: str
    num_classes: int
    input_shape: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    preprocessing: Preprocessing | None = None


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> None:
    """Write atomically and durably: a crash or power loss leaves the old file or the new one, never half of one.

    The bytes go to a temporary name and are fsynced before the rename (a
    rename can reach the disk before the data it names), and the directory is
    fsynced after it so the rename itself survives.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(
            {
                "format": FORMAT,
                "state_dict": {k: v.detach().cpu() for k, v in ckpt.state_dict.items()},
                "arch": ckpt.arch,
                "num_classes": int(ckpt.num_classes),
                "input_shape": [int(d) for d in ckpt.input_shape],
                "meta": ckpt.meta,
                **({"preprocessing": ckpt.preprocessing.to_dict()} if ckpt.preprocessing else {}),
            },
            handle,
        )
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def safe_torch_load(path: str | Path) -> Any:
    """`torch.load(weights_only=True)` with one-line errors for missing, corrupt or pickled files."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{path}: refused: the file carries pickled Python objects, which are never loaded "
            f"(only tensors and plain data are accepted) [{first_line(exc, 120)}]"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise UserError(f"{path}: not a readable PyTorch file ({first_line(exc, 160)})") from None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a compressor checkpoint; a bare state dict or a foreign file gives a one-line error."""
    data = safe_torch_load(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(
            f"{path}: not a compressor checkpoint (no architecture stored); "
            "for a bare state dict pass --teacher torchvision:ARCH --teacher-weights FILE"
        )
    return Checkpoint(
        state_dict=data["state_dict"],
        arch=data["arch"],
        num_classes=data["num_classes"],
        input_shape=tuple(data["input_shape"]),
        meta=data.get("meta", {}),
        preprocessing=(Preprocessing.from_dict(data["preprocessing"], f"{path}: preprocessing")
                       if data.get("preprocessing") is not None else None),
    )
