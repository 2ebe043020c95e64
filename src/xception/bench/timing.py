"""Side-by-side speed of our Xception and its peers, in one process and one run.

Contenders: ``ours`` (the model as built, with the run's settings), ``ours_ref`` (opt-in: the
model as built in plain fp32 NCHW eager whatever the settings, to see what they buy),
``ours_opt`` (``optimize_for_inference``: inference only, always channels_last, bfloat16
weights in a bf16 run; on a GPU it includes the Triton kernels), ``ours_fused``
(``fuse_model``: Triton kernels, BN not folded; GPU only), timm's
``legacy_xception`` (when timm is installed) and torchvision's ``inception_v3``. Modes: inference
at batch 1 (``infer1``) and batch N (``inferN``), and a full training step (``train``: forward,
backward, SGD step). Every contender gets the same settings (device, dtype, channels_last,
compile, CUDA graphs); repetitions are interleaved round-robin so load changes hit all alike,
and medians are reported. No number here is a claim until it is written down with its
machine and command (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..allocator import keep_freed_memory
from ..distributed import resolve_device
from ..errors import ConfigError
from .results import Entry, environment, ratios

MODES = ("infer1", "inferN", "train")
CONTENDERS = ("ours", "ours_opt", "ours_fused", "timm", "inception", "ours_ref")
DEFAULT_CONTENDERS = CONTENDERS[:-1]


@dataclass
class BenchSettings:
    model: str = "xception"                   # our model's registry name
    device: str = "auto"                      # auto, cpu, cuda, cuda:N
    dtype: str = "fp32"                       # fp32 or bf16 (autocast)
    channels_last: bool = True
    compile: bool = False                     # torch.compile (Inductor freezing for inference)
    cuda_graphs: bool = False                 # capture each step in a CUDA graph (CUDA only)
    checkpointing: bool = False               # activation checkpointing for our training step
    image_size: int = 299
    batch: int = 32                           # N of inferN and train
    reps: int = 5                             # timed repetitions (medians reported)
    iters: int = 1                            # steps per repetition
    warmup: int = 2                           # untimed steps first (compilation happens here)
    modes: tuple[str, ...] = MODES
    contenders: tuple[str, ...] = DEFAULT_CONTENDERS
    threads: int | None = None                # torch.set_num_threads; None leaves it
    num_classes: int = 1000

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise ConfigError(f"unknown mode(s) {bad}; choose from {', '.join(MODES)}")
        bad = [c for c in self.contenders if c not in CONTENDERS]
        if bad:
            raise ConfigError(f"unknown contender(s) {bad}; choose from {', '.join(CONTENDERS)}")
        if self.dtype not in ("fp32", "bf16"):
            raise ConfigError(f"dtype must be fp32 or bf16, got {self.dtype!r}")
        for name in ("image_size", "batch", "reps", "iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be >= 0, got {self.warmup}")


def build_peer(name: str, num_classes: int) -> nn.Module:
    """timm's legacy_xception or torchvision's inception_v3 (no auxiliary tower), random weights."""
    if name == "timm":
        import timm  # optional: ImportError means "not installed", reported as such

        return timm.create_model("legacy_xception", pretrained=False, num_classes=num_classes)
    from torchvision.models import inception_v3

    return inception_v3(weights=None, aux_logits=False, init_weights=False,
                        num_classes=num_classes)


def _autocast(s: BenchSettings, device: torch.device):
    if s.dtype == "bf16":
        # the autocast weight cache must not outlive a captured graph
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=not s.cuda_graphs)
    return contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _graphed(step: Callable[[], object], device: torch.device, warm: Callable | None = None,
             before_capture: Callable | None = None, warmup: int = 3) -> Callable:
    """Capture ``step`` in a CUDA graph and return its replay. ``warm`` runs first on a side
    stream (Triton compiles, cuDNN picks algorithms, optimizer state appears), then
    ``before_capture`` (e.g. grads set to None, so backward allocates them inside the graph)."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            (warm or step)()
    torch.cuda.current_stream(device).wait_stream(stream)
    if before_capture is not None:
        before_capture()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def _inference_step(model: nn.Module, x: torch.Tensor, s: BenchSettings,
                    device: torch.device) -> Callable:
    model.eval()

    def step():
        with torch.no_grad(), _autocast(s, device):
            return model(x)
    return _graphed(step, device) if s.cuda_graphs and device.type == "cuda" else step


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: BenchSettings,
                device: torch.device) -> Callable:
    model.train()
    fwd = torch.compile(model) if s.compile else model
    from ..training.optimizers import update_kernel  # fit's update kernel (fused where it can)

    params = list(model.parameters())
    # under CUDA-graph capture: the multi-tensor step, the one the GPU check ran with
    kernel = update_kernel(params, fused_available=not s.cuda_graphs)
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9, **kernel)

    def step():
        with _autocast(s, device):
            loss = F.cross_entropy(fwd(x), y)
        loss.backward()
        opt.step()

    def eager_step():
        opt.zero_grad(set_to_none=True)
        step()

    if s.cuda_graphs and device.type == "cuda":
        # grads set to None before capture are allocated by the captured backward, so each
        # replay writes them afresh instead of accumulating
        return _graphed(step, device, warm=eager_step,
                        before_capture=lambda: opt.zero_grad(set_to_none=True))
    return eager_step


def saved_activation_bytes(model: nn.Module, x: torch.Tensor, s: BenchSettings,
                           device: torch.device) -> int:
    """Bytes of the tensors autograd keeps for backward in one training forward (parameters
    excluded, shared storages counted once): the activation memory of a training step."""
    params = {p.data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _autocast(s, device):
        model(x)
    return sum(seen.values())


def _contender_model(name: str, ours: nn.Module, s: BenchSettings, training: bool) -> nn.Module:
    from ..fast import optimize_for_inference
    from ..fast.fuse import fuse_model
    from ..fast.optimize import CompiledForInference

    if name == "ours_opt":
        # what a user gets from optimize_for_inference: channels_last whatever the run's setting
        return optimize_for_inference(ours, compile=s.compile,
                                      dtype=torch.bfloat16 if s.dtype == "bf16" else None)
    model = copy.deepcopy(ours) if name.startswith("ours") else build_peer(name, s.num_classes)
    if name == "ours_fused":
        fuse_model(model, channels_last=s.channels_last)
    if name.startswith("ours") and s.checkpointing and training:
        model.set_grad_checkpointing(True)
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if s.compile and not training:
        model = CompiledForInference(model.eval())
    return model


def _skip_reason(name: str, mode: str, s: BenchSettings, device: torch.device) -> str | None:
    if name == "ours_opt" and mode == "train":
        return "inference only"
    if name == "ours_fused" and device.type != "cuda":
        return "Triton kernels need a GPU (elsewhere the fused model runs the same ops as 'ours')"
    if name == "inception" and s.image_size < 75:
        return "inception_v3 needs inputs of at least 75 px"
    if name == "timm" and s.image_size < 71:
        return "legacy_xception needs inputs of at least 71 px"
    return None


def _median_entry(entry: Entry, batch: int) -> None:
    if entry.times_ms:
        entry.median_ms = statistics.median(entry.times_ms)
        entry.median_cpu_ms = statistics.median(entry.cpu_ms)
        entry.img_per_s = batch * 1000.0 / entry.median_ms


def run_benchmark(s: BenchSettings, log: Callable[[str], object] = print) -> dict:
    """Measure every contender in every mode; returns a JSON-ready dict (see ``format_table``)."""
    from ..models.registry import create_model

    if s.threads:
        torch.set_num_threads(s.threads)
    device = resolve_device(s.device, setting="--device")
    if device.type == "cpu":
        keep_freed_memory()  # as a training run does (fit)
    torch.manual_seed(0)
    ours = create_model(s.model, num_classes=s.num_classes).to(device)
    results: dict[str, dict[str, Entry]] = {}
    for mode in s.modes:
        batch = 1 if mode == "infer1" else s.batch
        entries = {name: Entry() for name in s.contenders}
        todo = []
        for name in s.contenders:
            reason = _skip_reason(name, mode, s, device)
            if reason:
                entries[name].error = f"skipped: {reason}"
            else:
                todo.append(name)
        # CUDA graphs keep each captured step's memory: measure one contender at a time and
        # free it; otherwise interleave repetitions so load changes hit every contender alike
        groups = [[name] for name in todo] if s.cuda_graphs else [todo]
        for group in groups:
            steps = {}
            for name in group:
                log(f"  {mode:7s} {name:11s} preparing (warm-up"
                    f"{', compiling' if s.compile else ''})")
                try:
                    steps[name] = _prepare(name, mode, ours, batch, s, device, entries[name])
                except Exception as err:  # noqa: BLE001 - a failing contender is a result
                    entries[name].error = f"{type(err).__name__}: {err}"
                    log(f"  {mode:7s} {name:11s} failed: {entries[name].error}")
            _time_round_robin(steps, entries, s, device, log)
            for name in steps:
                _median_entry(entries[name], batch)
                if entries[name].median_ms is not None:
                    log(f"  {mode:7s} {name:11s} {entries[name].median_ms:9.2f} ms  "
                        f"{entries[name].img_per_s:9.1f} img/s")
            del steps
            if device.type == "cuda":
                torch.cuda.empty_cache()
        results[mode] = entries
    return {"settings": asdict(s), "environment": environment(device),
            "results": {m: {n: asdict(e) for n, e in r.items()} for m, r in results.items()},
            "ratios": ratios(results)}


def _time_round_robin(steps: dict[str, Callable], entries: dict[str, Entry], s: BenchSettings,
                      device: torch.device, log: Callable[[str], object]) -> None:
    """``s.reps`` repetitions of ``s.iters`` steps, visiting every contender in turn; one that
    fails (out of memory, say) is dropped with its error recorded and its times discarded."""
    for _ in range(s.reps):
        for name, step in list(steps.items()):
            try:
                _sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(s.iters):
                    step()
                _sync(device)
            except Exception as err:  # noqa: BLE001
                entries[name].error = f"{type(err).__name__}: {err}"
                entries[name].times_ms.clear()
                entries[name].cpu_ms.clear()
                log(f"  {name:11s} failed while timed: {entries[name].error}")
                del steps[name]
                continue
            entries[name].times_ms.append((time.perf_counter() - t0) * 1000.0 / s.iters)
            entries[name].cpu_ms.append((time.process_time() - c0) * 1000.0 / s.iters)


def _prepare(name: str, mode: str, ours: nn.Module, batch: int, s: BenchSettings,
             device: torch.device, entry: Entry) -> Callable:
    """Build the contender's model and step, warm it up and measure its memory."""
    if name == "ours_ref":
        s = replace(s, dtype="fp32", channels_last=False, compile=False, cuda_graphs=False,
                    checkpointing=False)
    training = mode == "train"
    model = _contender_model(name, ours, s, training).to(device)
    fmt = torch.channels_last if s.channels_last else torch.contiguous_format
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, s.image_size, s.image_size, generator=gen)
    x = x.to(device).contiguous(memory_format=fmt)
    y = torch.randint(0, s.num_classes, (batch,), generator=gen).to(device)
    if training:
        entry.saved_mb_per_image = saved_activation_bytes(model, x, s, device) / 2**20 / batch
    t0 = time.perf_counter()
    step = _train_step(model, x, y, s, device) if training else _inference_step(model, x, s, device)
    for _ in range(s.warmup):
        step()
    _sync(device)
    entry.warmup_s = time.perf_counter() - t0
    if getattr(model, "compile_failed", False):
        entry.note = "torch.compile failed: measured eagerly"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        idle = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        entry.peak_mb = (torch.cuda.max_memory_allocated(device) - idle) / 2**20
    return step


def side_by_side_training(models: dict[str, nn.Module], input_shape: tuple[int, int, int],
                          num_classes: int, batch: int = 64, reps: int = 7, warmup: int = 2,
                          channels_last: bool = True) -> dict[str, float]:
    """Training images/s (CPU, fp32) of each model, measured in one process and in turns: every
    repetition times one SGD step of each model before the next repetition, so the machine's
    drift falls on all of them alike (the paper's steps/s ratio, 28 vs 31, was one such pair).
    Median over ``reps``; the models are trained on random inputs (their weights change)."""
    settings = BenchSettings(batch=batch, reps=reps, warmup=warmup, channels_last=channels_last,
                             image_size=input_shape[-1], modes=("train",), num_classes=num_classes)
    device = torch.device("cpu")
    memory = torch.channels_last if channels_last else torch.contiguous_format
    steps: dict[str, Callable] = {}
    for name, model in models.items():
        x = torch.randn(batch, *input_shape).to(memory_format=memory)
        y = torch.randint(0, num_classes, (batch,))
        step = _train_step(model.to(memory_format=memory), x, y, settings, device)
        for _ in range(warmup):
            step()
        steps[name] = step
    entries = {name: Entry() for name in steps}
    _time_round_robin(steps, entries, settings, device, log=lambda _: None)
    return {name: batch * 1000.0 / statistics.median(entry.times_ms)
            for name, entry in entries.items() if entry.times_ms}
