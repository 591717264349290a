"""The eager PyTorch backend: the baseline a deployment runtime is compared against.

It measures a `torch.nn.Module` in eval mode under `torch.inference_mode()`
on the CPU (with the target's thread count and CPU affinity) or on CUDA when
the target lists `CUDAExecutionProvider` (timed with CUDA events). ONNX files
cannot be run eagerly: they go to the onnxruntime or tensorrt backends.

Static figures for a module: parameters are `numel` of its parameters; MACs
are counted with forward hooks on Conv/ConvTranspose/Linear layers during one
run (functional matmuls are not seen); size is the bytes of its state dict.
Peak memory is measured on CUDA (peak allocated by PyTorch during the timed
runs); on the CPU it is not (None, with a warning): an in-process RSS figure
would count whatever else the process holds.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import time

from profilers import host
from profilers.errors import ProfileError
from profilers.profile import Profile, build_profile
from profilers.stats import time_adaptively

__all__ = ["TorchBackend"]

MIB = 1024 * 1024


class TorchBackend:
    """Eager PyTorch on CPU or CUDA."""

    name = "torch"

    def available(self) -> tuple[bool, str]:
        try:
            importlib.import_module("torch")
        except ImportError:
            return False, "torch not installed"
        return True, ""

    def memory_meaning(self, target) -> str | None:
        """What `peak_memory_mb` means on this runtime (None: not measured, as on the CPU)."""
        if "CUDAExecutionProvider" in target.providers:
            return "peak GPU memory allocated by PyTorch during the timed runs"
        return None

    def describe(self) -> dict:
        import torch

        return {"torch": torch.__version__, "cuda": torch.cuda.is_available()}

    def measure(
        self,
        model,
        target,
        *,
        input_shape: tuple[int, ...] | None = None,
        max_seconds: float | None = None,
        memory: bool = True,
        keep_samples: bool = False,
        label: str | None = None,
    ) -> Profile:
        """Profile a torch.nn.Module on `target` (see `profilers.measure`)."""
        import torch

        if not isinstance(model, torch.nn.Module):
            raise ProfileError(
                "the torch runtime measures a torch.nn.Module; for an ONNX file use an onnxruntime target"
            )
        if input_shape is None:
            raise ProfileError("the torch runtime needs input_shape (e.g. --input-shape 1x3x224x224)")
        use_cuda = "CUDAExecutionProvider" in target.providers
        if use_cuda and not torch.cuda.is_available():
            raise ProfileError(f"target {target.name!r} asks for CUDA but torch sees no GPU")
        device = torch.device("cuda" if use_cuda else "cpu")
        model = model.eval().to(device)
        generator = torch.Generator().manual_seed(0)
        example = torch.randn(*input_shape, generator=generator).to(device)
        threads = target.threads or host.physical_cores()
        macs = count_macs(model, example)
        warnings = []
        with host.pinned_to(target.cpu_affinity), torch.inference_mode(), _threads(torch, threads, use_cuda):
            if use_cuda:
                torch.cuda.reset_peak_memory_stats(device)
                baseline = torch.cuda.memory_allocated(device)
                start_event = torch.cuda.Event(enable_timing=True)
                end_event = torch.cuda.Event(enable_timing=True)

                def run_once() -> float:
                    start_event.record()
                    model(example)
                    end_event.record()
                    end_event.synchronize()
                    return start_event.elapsed_time(end_event)

            else:

                def run_once() -> float:
                    start = time.perf_counter_ns()
                    model(example)
                    return (time.perf_counter_ns() - start) / 1e6

            timing = time_adaptively(run_once, target.measure, max_seconds)
            affinity = host.current_affinity()
            peak = None
            if use_cuda and memory:
                peak = (torch.cuda.max_memory_allocated(device) - baseline) / MIB
            elif memory:
                warnings.append("peak memory is not measured for eager PyTorch on the CPU")
        static = {
            "params": sum(p.numel() for p in model.parameters()),
            "macs": macs,
            "model_size_mb": sum(t.numel() * t.element_size() for t in model.state_dict().values()) / MIB,
        }
        environment = host.environment(**self.describe(), device=str(device), intra_op_threads=threads)
        environment["affinity"] = affinity
        return build_profile(
            target=target,
            runtime=self.name,
            label=label or type(model).__name__,
            input_shape=tuple(input_shape),
            timing=timing,
            peak_memory_mb=peak,
            peak_memory_meaning=self.memory_meaning(target),
            static=static,
            environment=environment,
            warnings=warnings,
            keep_samples=keep_samples,
        )


@contextlib.contextmanager
def _threads(torch, threads: int, use_cuda: bool):
    if use_cuda:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def layer_macs(module, inputs, output) -> int:
    """MACs of one call of a convolution, transposed convolution or linear layer (0 for any other module)."""
    import torch

    if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
        return output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)):
        return inputs[0].numel() * (module.out_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, torch.nn.Linear):
        return output.numel() * module.in_features
    return 0


def count_macs(model, example) -> int:
    """MACs of one forward pass of `model` on `example` (convolutions, transposed convolutions, linear layers)."""
    import torch

    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += layer_macs(module, inputs, output)

    handles = [module.register_forward_hook(hook) for module in model.modules()
               if isinstance(module, (torch.nn.modules.conv._ConvNd, torch.nn.Linear))]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return total
