"""Networks as files: building from an `arch` reference, checkpoints, ONNX export and teachers.

- `build`: the one place that maps an `arch` string (`torchvision:NAME`, an
  ArchSpec, a `zoo:`/`nago` reference) to a `torch.nn.Module`;
- `checkpoint`: the compressor checkpoint (state dict + arch + shapes + meta),
  written atomically and read with `torch.load(weights_only=True)`;
- `onnx_export`: PyTorch -> ONNX with the project's fixed input/output names;
- `teachers`: a teacher from torchvision, a checkpoint or an ONNX file, with
  its content hash (the key of the teacher-logits cache).
"""
