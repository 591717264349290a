"""Runtime backends, one module each, registered by name in `profilers` and imported on first use.

`ort` (ONNX Runtime, with `memprobe` measuring peak memory in a fresh
process), `trt` (TensorRT 10), `torch_eager` (eager PyTorch) and `remote`
(a device's `compressor agent`). Each is a small class with `available()`,
`measure(model, target, ...)` returning a `profilers.profile.Profile`,
`describe()` and `memory_meaning(target)` (what its `peak_memory_mb` means
there, or None where it measures none: a memory budget cannot be judged).
"""
