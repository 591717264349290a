"""Teachers: the trained network whose logits the students learn from.

Three kinds, one interface (`Teacher.logits`, `Teacher.onnx_bytes`):
- `torchvision:ARCH` with `--teacher-weights FILE`: a state dict read with
  `torch.load(weights_only=True)`;
- a compressor checkpoint (state dict + architecture, compressor.models.checkpoint);
- an `.onnx` file from any framework: checked with `onnx.checker`, then run
  with ONNX Runtime.

`content_hash` covers the architecture and the weights (or the ONNX bytes),
so the teacher-logits cache is invalidated whenever the teacher changes.
Nothing read from a file is executed: a checkpoint carrying pickled objects
is refused (compressor.models.checkpoint.safe_torch_load).
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.errors import UserError


@dataclass
class Teacher:
    ref: str
    arch: str
    content_hash: str
    num_classes: int
    params: int
    module: Any = None
    onnx_model: bytes | None = None
    # A compressor checkpoint's meta (its training data's `data_split`, accuracies); empty otherwise.
    meta: dict[str, Any] = field(default_factory=dict)

    def logits(self, x, batch_size: int = 256):
        """Teacher logits for images `x` (N,C,H,W), computed in eval mode without gradients; CPU float32."""
        import torch

        outputs = []
        if self.module is not None:
            self.module.eval()
            with torch.inference_mode():
                for start in range(0, len(x), batch_size):
                    outputs.append(self.module(x[start:start + batch_size]).float().cpu())
            return torch.cat(outputs)
        session = self._session()
        name = session.get_inputs()[0].name
        fixed = session.get_inputs()[0].shape[0]
        step = fixed if isinstance(fixed, int) and fixed > 0 else batch_size
        for start in range(0, len(x), step):
            chunk = x[start:start + step].numpy()
            outputs.append(torch.from_numpy(session.run(None, {name: chunk})[0]).float())
        return torch.cat(outputs)

    def _session(self):
        import onnxruntime as ort

        if not hasattr(self, "_ort_session"):
            options = ort.SessionOptions()
            options.intra_op_num_threads = 2
            self._ort_session = ort.InferenceSession(self.onnx_model, options, providers=["CPUExecutionProvider"])
        return self._ort_session

    def onnx_bytes(self, input_shape: tuple[int, ...]) -> bytes:
        """The teacher as ONNX (for profiling it on a target): exported, or the file itself."""
        if self.onnx_model is not None:
            return self.onnx_model
        from compressor.models.onnx_export import export_onnx

        return export_onnx(self.module, tuple(input_shape))


def state_dict_hash(arch: str, state_dict: dict) -> str:
    digest = hashlib.sha256(arch.encode())
    for name in sorted(state_dict):
        tensor = state_dict[name]
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_teacher(ref: str, *, weights: str | None = None, num_classes: int,
                 input_shape: tuple[int, int, int]) -> Teacher:
    """Load a teacher and check it against the data (classes, input channels).

    Args:
        ref: `torchvision:ARCH`, a compressor checkpoint path, or an `.onnx` path.
        weights: a state dict file for a `torchvision:ARCH` teacher.
        num_classes: the dataset's classes; a teacher with another output count is refused.
        input_shape: the dataset's (C, H, W).

    Raises:
        UserError: missing or unreadable files, pickled payloads, mismatched classes or weights.
    """
    from compressor.models.checkpoint import load_checkpoint, safe_torch_load
    from compressor.models.build import model_from_checkpoint, torchvision_model

    if ref.endswith(".onnx"):
        return _onnx_teacher(ref, num_classes, input_shape)
    if ref.startswith("torchvision:"):
        model = torchvision_model(ref.split(":", 1)[1], num_classes, input_shape)
        if weights:
            state = safe_torch_load(weights)
            if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
                raise UserError(f"{weights}: not a state dict (a mapping of parameter names to tensors)")
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise UserError(f"{weights}: weights do not fit {ref} with {num_classes} classes "
                                f"({str(exc).splitlines()[-1].strip()[:160]})") from None
        arch = ref
        meta = {}
    else:
        if not Path(ref).is_file():
            raise UserError(f"teacher {ref!r}: no such file (use torchvision:ARCH, a checkpoint or an .onnx file)")
        ckpt = load_checkpoint(ref)
        if ckpt.num_classes != num_classes:
            raise UserError(f"teacher {ref} has {ckpt.num_classes} classes but the data has {num_classes}")
        if tuple(ckpt.input_shape)[0] != input_shape[0]:
            raise UserError(f"teacher {ref} takes {ckpt.input_shape[0]}-channel images but the data has "
                            f"{input_shape[0]}; pass --channels {ckpt.input_shape[0]}")
        model = model_from_checkpoint(ckpt)
        arch = ckpt.arch
        meta = ckpt.meta
    model.eval()
    return Teacher(ref=ref, arch=arch, content_hash=state_dict_hash(arch, model.state_dict()),
                   num_classes=num_classes, params=sum(p.numel() for p in model.parameters()), module=model,
                   meta=meta)


def _onnx_teacher(ref: str, num_classes: int, input_shape: tuple[int, int, int]) -> Teacher:
    import numpy as np
    import profilers

    try:
        model = profilers.load_onnx_checked(ref)
    except profilers.ProfileError as exc:
        raise UserError(str(exc)) from None
    data = Path(ref).read_bytes()
    dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    if dims and dims[-1] and dims[-1] != num_classes:
        raise UserError(f"teacher {ref} has {dims[-1]} outputs but the data has {num_classes} classes")
    expected = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    if len(expected) == 3 and any(e and e != got for e, got in zip(expected, input_shape)):
        wanted = "x".join(str(e or "?") for e in expected)
        raise UserError(f"teacher {ref} takes {wanted} inputs but the data is {'x'.join(map(str, input_shape))}; "
                        f"pass --channels {expected[0] or input_shape[0]} --image-size {expected[1] or input_shape[1]}")
    params = int(sum(np.prod(init.dims) for init in model.graph.initializer))
    return Teacher(ref=ref, arch=f"onnx:{Path(ref).name}", content_hash=hashlib.sha256(data).hexdigest(),
                   num_classes=num_classes, params=params, onnx_model=data)


def add_teacher_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--teacher", required=required,
                        help="torchvision:ARCH (with --teacher-weights), a compressor checkpoint, or an ONNX file")
    parser.add_argument("--teacher-weights", metavar="FILE",
                        help="state dict for a torchvision:ARCH teacher (loaded with weights_only=True)")


def teacher_from_args(args: argparse.Namespace, dataset) -> Teacher:
    return load_teacher(args.teacher, weights=args.teacher_weights, num_classes=dataset.num_classes,
                        input_shape=dataset.input_shape)
