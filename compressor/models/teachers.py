"""Teachers: the trained network whose logits the students learn from.

Three kinds, one interface (`Teacher.logits`, `Teacher.onnx_bytes`):
- `torchvision:ARCH` with `--teacher-weights FILE`: a state dict read with
  `torch.load(weights_only=True)`;
- a compressor checkpoint (state dict + architecture, compressor.models.checkpoint);
- an `.onnx` file from any framework: checked with `onnx.checker`, then run
  with ONNX Runtime.

`content_hash` covers the architecture and the weights (or the ONNX bytes),
so the teacher-logits cache is invalidated whenever the teacher changes.

Inputs: a teacher is fed what it was trained on, not what the student gets.
`teacher_inputs` builds its tensors from the raw [0, 1] dataset: read again at
the teacher's own size and channels if they differ from the student's
(`Dataset.at_size`, same split and order), then normalised with the
teacher's preprocessing (compressor.models.preprocessing). Which one, in order:
`--teacher-preprocess` if given; else what the teacher records (a compressor
checkpoint's `preprocessing`, an ONNX file's `metadata_props`); else ImageNet's
statistics for a `torchvision:ARCH` state dict; else `dataset` (the training
split's mean and std, what compressor did before preprocessing was recorded,
so older checkpoints stay right). The teacher's size: a checkpoint's input
shape, an ONNX file's fixed input dims (or the size its metadata records),
else `--teacher-image-size`, else the data's. The logits cache key is the
teacher's hash plus the identity of those tensors, which includes size,
channels and preprocessing.

`check_teacher_accuracy` turns the teacher's validation accuracy into the
console line printed before any search, and a hint when the inputs are
probably wrong: the accuracy is below `--teacher-min-accuracy` if given, else
below min(2x chance, halfway from chance to 100%); or another named choice
(`alternative_accuracies`: none, imagenet, dataset on up to 512 validation
images) does at least 10 points better. The second rule catches what the
first cannot: on 28 px digits an ONNX teacher trained on raw pixels scores
35% with `dataset` and 22% with `imagenet`, both above 2x chance, and 98%
with `none` (BENCHMARKS.md).
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
from compressor.models.preprocessing import CHOICE_HELP, PreprocessChoice, Preprocessing, from_metadata


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
    # (C, H, W) the teacher takes: may differ from the student's.
    input_shape: tuple[int, int, int] = (3, 32, 32)
    # The preprocessing the teacher records (checkpoint, ONNX metadata), and where it was read.
    recorded: Preprocessing | None = None
    recorded_from: str = ""

    def logits(self, x, batch_size: int = 256):
        """Teacher logits for images `x` (N,C,H,W), computed in eval mode without gradients; CPU float32."""
        import torch

        outputs = []
        if self.module is not None:
            self.module.eval()
            with torch.inference_mode():
                for start in range(0, len(x), batch_size):
                    outputs.append(self.module(x[start:start + batch_size]).float().cpu())
        else:
            session = self._session()
            name = session.get_inputs()[0].name
            fixed = session.get_inputs()[0].shape[0]
            # A file exported with a fixed batch (often 1) is fed that many images at a time.
            step = fixed if isinstance(fixed, int) and fixed > 0 else batch_size
            for start in range(0, len(x), step):
                chunk = x[start:start + step].numpy()
                outputs.append(torch.from_numpy(session.run(None, {name: chunk})[0]).float())
        logits = torch.cat(outputs)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise UserError(_class_mismatch(self.ref, tuple(logits.shape[1:]), self.num_classes))
        return logits

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
                 input_shape: tuple[int, int, int], image_size: int | None = None) -> Teacher:
    """Load a teacher, check its classes against the data and find the input shape it takes.

    Args:
        ref: `torchvision:ARCH[:stem=small]`, a compressor checkpoint path, or an `.onnx` path.
        weights: a state dict file for a `torchvision:ARCH` teacher.
        num_classes: the dataset's classes; a teacher with another output count is refused.
        input_shape: the dataset's (C, H, W): the teacher's where the teacher does not fix its own.
        image_size: the teacher's input size where the teacher does not fix it (`--teacher-image-size`).

    Raises:
        UserError: missing or unreadable files, pickled payloads, mismatched classes or weights.
    """
    from compressor.models.checkpoint import load_checkpoint, safe_torch_load
    from compressor.models.build import model_from_checkpoint, parse_torchvision_arch, torchvision_model

    if image_size is not None and image_size < 8:
        raise UserError(f"--teacher-image-size must be >= 8, got {image_size}")
    size = image_size or input_shape[1]
    if ref.endswith(".onnx"):
        return _onnx_teacher(ref, num_classes, input_shape, image_size)
    recorded, recorded_from = None, ""
    if ref.startswith("torchvision:"):
        shape = (input_shape[0], size, size)
        name, stem = parse_torchvision_arch(ref)
        model = torchvision_model(name, num_classes, shape, stem=stem)
        if weights:
            state = safe_torch_load(weights)
            if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
                raise UserError(f"{weights}: not a state dict (a mapping of parameter names to tensors)")
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                # The classifier comes last in a state dict: its rows are the teacher's classes.
                last = [v for v in state.values() if v.ndim >= 1][-1:]
                if last and last[0].shape[0] != num_classes:
                    raise UserError(_class_mismatch(f"{ref} ({weights})", (last[0].shape[0],), num_classes)) from None
                raise UserError(f"{weights}: weights do not fit {ref} with {num_classes} classes "
                                f"({str(exc).splitlines()[-1].strip()[:160]})") from None
        arch = ref
        meta = {}
    else:
        if not Path(ref).is_file():
            raise UserError(f"teacher {ref!r}: no such file (use torchvision:ARCH, a checkpoint or an .onnx file)")
        ckpt = load_checkpoint(ref)
        if ckpt.num_classes != num_classes:
            raise UserError(_class_mismatch(ref, (ckpt.num_classes,), num_classes))
        shape = tuple(ckpt.input_shape)
        if image_size is not None and shape[1:] != (image_size, image_size):
            raise UserError(f"--teacher-image-size {image_size}: teacher {ref} was trained at "
                            f"{shape[1]}x{shape[2]} px; drop the flag")
        model = model_from_checkpoint(ckpt)
        arch = ckpt.arch
        meta = ckpt.meta
        recorded, recorded_from = ckpt.preprocessing, "recorded in the checkpoint"
    model.eval()
    return Teacher(ref=ref, arch=arch, content_hash=state_dict_hash(arch, model.state_dict()),
                   num_classes=num_classes, params=sum(p.numel() for p in model.parameters()), module=model,
                   meta=meta, input_shape=shape, recorded=recorded, recorded_from=recorded_from)


def _onnx_teacher(ref: str, num_classes: int, input_shape: tuple[int, int, int], image_size: int | None) -> Teacher:
    import numpy as np
    import profilers

    try:
        model = profilers.load_onnx_checked(ref)
    except profilers.ProfileError as exc:
        raise UserError(str(exc)) from None
    data = Path(ref).read_bytes()
    dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    if dims and dims[-1] and dims[-1] != num_classes:
        raise UserError(_class_mismatch(ref, (dims[-1],), num_classes))
    recorded = from_metadata({p.key: p.value for p in model.metadata_props}, ref)
    expected = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    if len(expected) != 3:
        raise UserError(f"teacher {ref} takes a rank-{len(expected) + 1} input; image teachers take (N, C, H, W)")
    fallback = (recorded.channels, *recorded.size) if recorded else (input_shape[0], image_size or input_shape[1],
                                                                      image_size or input_shape[2])
    shape = tuple(e or f for e, f in zip(expected, fallback))
    if shape[1] != shape[2]:
        raise UserError(f"teacher {ref} takes {shape[1]}x{shape[2]} inputs; only square inputs are supported")
    if image_size is not None and shape[1] != image_size:
        raise UserError(f"--teacher-image-size {image_size}: teacher {ref} takes {shape[1]}x{shape[2]} px; "
                        "drop the flag")
    if shape[0] not in (1, 3):
        raise UserError(f"teacher {ref} takes {shape[0]}-channel images; only 1 or 3 channels are supported")
    params = int(sum(np.prod(init.dims) for init in model.graph.initializer))
    return Teacher(ref=ref, arch=f"onnx:{Path(ref).name}", content_hash=hashlib.sha256(data).hexdigest(),
                   num_classes=num_classes, params=params, onnx_model=data, input_shape=shape, recorded=recorded,
                   recorded_from="recorded in the ONNX file's metadata" if recorded else "")


def _class_mismatch(ref: str, outputs: tuple[int, ...], num_classes: int) -> str:
    got = "x".join(map(str, outputs)) if outputs else "no"
    return (f"teacher {ref} has {got} outputs but the data has {num_classes} classes: distillation needs the "
            "teacher's classes to be the data's, in the same order (ImageFolder: the sorted folder names)")


@dataclass
class TeacherInputs:
    """The dataset as the teacher sees it: its size, its preprocessing (and why that one)."""

    teacher: Teacher
    dataset: Any
    preprocessing: Preprocessing
    source: str

    def describe(self) -> str:
        return f"teacher preprocessing: {self.preprocessing.describe()} ({self.source})"


def teacher_inputs(teacher: Teacher, raw, choice: str | None = None) -> TeacherInputs:
    """The teacher's tensors for every split of the raw dataset `raw` (see the module docstring).

    Args:
        teacher: the loaded teacher (its input shape and recorded preprocessing).
        raw: the `Dataset` (raw [0, 1], or normalised from one; the student's size is fine: it is read again
            at the teacher's).
        choice: `--teacher-preprocess` (none, imagenet, dataset, mean=..,std=..); None: the recorded or default.
    """
    channels, height, width = teacher.input_shape
    data = raw.as_raw().at_size(height, channels)
    stats = (data.mean, data.std)
    if choice is not None:
        pre = PreprocessChoice.parse(choice).resolve((height, width), channels, stats)
        source = "--teacher-preprocess"
    elif teacher.recorded is not None:
        pre, source = teacher.recorded, teacher.recorded_from
        if (pre.channels, *pre.size) != tuple(teacher.input_shape):
            raise UserError(f"teacher {teacher.ref}: its recorded preprocessing is for {pre.channels}x{pre.size[0]}x"
                            f"{pre.size[1]} inputs but it takes {'x'.join(map(str, teacher.input_shape))}")
    elif teacher.arch.startswith("torchvision:"):
        pre = PreprocessChoice("imagenet").resolve((height, width), channels, stats)
        source = "default for torchvision teachers; pass --teacher-preprocess to change it"
    else:
        pre = PreprocessChoice("dataset").resolve((height, width), channels, stats)
        source = "default: the teacher records none; pass --teacher-preprocess to change it"
    return TeacherInputs(teacher=teacher, dataset=data.normalised(pre), preprocessing=pre, source=source)


# An alternative preprocessing this much more accurate means the chosen one is probably wrong.
BETTER_BY = 0.10
ALTERNATIVE_SAMPLES = 512


def alternative_accuracies(inputs: TeacherInputs, limit: int = ALTERNATIVE_SAMPLES) -> dict[str, float]:
    """The teacher's accuracy on the first `limit` validation images with each named choice other than the
    one used (choices that give the same numbers are left out)."""
    from compressor.train.distill import logits_accuracy

    raw = inputs.dataset.as_raw()
    x, y = raw.val_x[:limit], raw.val_y[:limit]
    found = {}
    for name in ("none", "imagenet", "dataset"):
        pre = PreprocessChoice(name).resolve(inputs.preprocessing.size, inputs.preprocessing.channels,
                                             (raw.mean, raw.std))
        if (pre.mean, pre.std) != (inputs.preprocessing.mean, inputs.preprocessing.std) and len(y):
            found[name] = logits_accuracy(inputs.teacher.logits(pre.normalise(x)), y)
    return found


def check_teacher_accuracy(accuracy: float, samples: int, num_classes: int, min_accuracy: float | None = None,
                           alternatives: dict[str, float] | None = None) -> tuple[str, str | None]:
    """(the console line, a hint or None) for the teacher's validation accuracy (see the module docstring)."""
    chance = 1.0 / num_classes
    floor = min_accuracy if min_accuracy is not None else min(2 * chance, (1 + chance) / 2)
    line = f"teacher accuracy on val: {accuracy:.2%} ({samples} images, {num_classes} classes)"
    if alternatives:
        line += "; with --teacher-preprocess " + ", ".join(f"{k}: {v:.2%}" for k, v in alternatives.items())
    reasons = []
    if accuracy < floor:
        reasons.append(f"below --teacher-min-accuracy {floor:.0%}" if min_accuracy is not None
                       else f"below {floor:.0%}, {floor / chance:.1f}x chance")
    best = max(alternatives, key=alternatives.get) if alternatives else None
    if best is not None and alternatives[best] >= accuracy + BETTER_BY:
        reasons.append(f"{100 * (alternatives[best] - accuracy):.0f} points below --teacher-preprocess {best} "
                       f"({alternatives[best]:.2%})")
    if not reasons:
        return line, None
    return line, (f"the teacher's validation accuracy {accuracy:.2%} is {' and '.join(reasons)}: its inputs are "
                  "probably not what it was trained on; check --teacher-preprocess")


def add_teacher_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--teacher", required=required,
                        help="torchvision:ARCH (with --teacher-weights), a compressor checkpoint, or an ONNX file")
    parser.add_argument("--teacher-weights", metavar="FILE",
                        help="state dict for a torchvision:ARCH teacher (loaded with weights_only=True)")
    parser.add_argument("--teacher-preprocess", metavar="SPEC",
                        help=f"what the teacher's inputs are: {CHOICE_HELP}; default: what the teacher records "
                             "(checkpoint, ONNX metadata), imagenet for torchvision:ARCH, else dataset")
    parser.add_argument("--teacher-image-size", type=int, metavar="N",
                        help="input size of a teacher that does not fix its own (torchvision:ARCH, an ONNX file with "
                             "dynamic height/width); the images are read again at this size (default: --image-size)")
    parser.add_argument("--teacher-min-accuracy", type=float, metavar="PCT",
                        help="print a hint to check --teacher-preprocess when the teacher's validation accuracy is "
                             "below PCT percent (default: 2x chance, at most halfway from chance to 100%%)")


def teacher_from_args(args: argparse.Namespace, dataset) -> Teacher:
    return load_teacher(args.teacher, weights=args.teacher_weights, num_classes=dataset.num_classes,
                        input_shape=dataset.input_shape, image_size=args.teacher_image_size)


def min_accuracy_from_args(args: argparse.Namespace) -> float | None:
    """`--teacher-min-accuracy` (percent) as a fraction."""
    if args.teacher_min_accuracy is None:
        return None
    if not 0 <= args.teacher_min_accuracy <= 100:
        raise UserError(f"--teacher-min-accuracy is a percentage in [0, 100], got {args.teacher_min_accuracy}")
    return args.teacher_min_accuracy / 100
