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
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

MODES = ("infer1", "inferN", "train")
CONTENDERS = ("ours", "ours_opt", "ours_fused", "timm", "inception", "ours_ref")
DEFAULT_CONTENDERS = CONTENDERS[:-1]
PEERS = ("timm", "inception")


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


@dataclass
class Entry:
    """One contender in one mode: what was measured, or why not."""

    times_ms: list[float] = field(default_factory=list)
    median_ms: float | None = None
    cpu_ms: list[float] = field(default_factory=list)   # process CPU time (all threads) per step
    median_cpu_ms: float | None = None
    img_per_s: float | None = None
    warmup_s: float | None = None
    peak_mb: float | None = None              # CUDA: max allocated during one step, above idle
    saved_mb_per_image: float | None = None   # activations kept for backward (train), any device
    error: str | None = None
    note: str | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    return dev


def environment(device: torch.device) -> dict:
    import torchvision

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "torchvision": torchvision.__version__, "machine": platform.machine(),
           "processor": _cpu_name(), "threads": torch.get_num_threads(), "device": str(device)}
    for mod in ("timm", "triton"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def _cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


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
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

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
    from .fast import optimize_for_inference
    from .fast.fuse import fuse_model
    from .fast.optimize import CompiledForInference

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
    from .registry import create_model

    if s.threads:
        torch.set_num_threads(s.threads)
    device = resolve_device(s.device)
    torch.manual_seed(0)
    ours = create_model(s.model, num_classes=s.num_classes).to(device)
    results: dict[str, dict[str, Entry]] = {}
    for mode in s.modes:
        batch = 1 if mode == "infer1" else s.batch
        entries: dict[str, Entry] = {}
        steps: dict[str, Callable] = {}
        for name in s.contenders:
            entries[name] = entry = Entry()
            reason = _skip_reason(name, mode, s, device)
            if reason:
                entry.error = f"skipped: {reason}"
                continue
            log(f"  {mode:7s} {name:11s} preparing (warm-up{', compiling' if s.compile else ''})")
            try:
                steps[name] = _prepare(name, mode, ours, batch, s, device, entry)
            except Exception as err:  # noqa: BLE001 - a failing contender is a result
                entry.error = f"{type(err).__name__}: {err}"
                log(f"  {mode:7s} {name:11s} failed: {entry.error}")
        for _ in range(s.reps):  # round-robin: each repetition visits every contender
            for name, step in steps.items():
                _sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(s.iters):
                    step()
                _sync(device)
                entries[name].times_ms.append((time.perf_counter() - t0) * 1000.0 / s.iters)
                entries[name].cpu_ms.append((time.process_time() - c0) * 1000.0 / s.iters)
        for name in steps:
            _median_entry(entries[name], batch)
            log(f"  {mode:7s} {name:11s} {entries[name].median_ms:9.2f} ms  "
                f"{entries[name].img_per_s:9.1f} img/s")
        results[mode] = entries
    return {"settings": asdict(s), "environment": environment(device),
            "results": {m: {n: asdict(e) for n, e in r.items()} for m, r in results.items()},
            "ratios": ratios(results)}


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


def ratios(results: dict[str, dict[str, Entry]]) -> dict:
    """Per mode: each of our variants' median time over each peer's (below 1 = we are faster)."""
    out: dict[str, dict] = {}
    for mode, entries in results.items():
        for name in ("ours", "ours_opt", "ours_fused"):
            mine = entries.get(name)
            if mine is None or mine.median_ms is None:
                continue
            for peer in (*PEERS, "ours_ref"):
                theirs = entries.get(peer)
                if theirs is not None and theirs.median_ms:
                    out.setdefault(mode, {}).setdefault(name, {})[f"time_vs_{peer}"] = \
                        round(mine.median_ms / theirs.median_ms, 4)
    return out


def format_table(report: dict) -> str:
    """The report as a fixed-width table: one row per contender and mode; "vs" columns are
    time ratios (below 1: ours is faster)."""
    s = report["settings"]
    env = report["environment"]
    where = env.get("gpu") or f"{env['processor']} ({env['threads']} threads)"
    lines = [f"{s['model']} vs peers on {where}: {s['dtype']}, "
             f"channels_last={s['channels_last']}, compile={s['compile']}, "
             f"cuda_graphs={s['cuda_graphs']}, {s['image_size']} px, batch N={s['batch']}, "
             f"median of {s['reps']} x {s['iters']}",
             f"{'mode':7s} {'model':11s} {'ms/step':>10s} {'img/s':>10s} {'vs timm':>8s} "
             f"{'vs incep':>8s} {'vs ref':>7s} {'cpu ms':>9s} {'peak MB':>9s} {'act MB/img':>10s}"]
    for mode, entries in report["results"].items():
        for name, e in entries.items():
            if e["median_ms"] is None:
                lines.append(f"{mode:7s} {name:11s} {e['error'] or 'not measured'}")
                continue
            r = report["ratios"].get(mode, {}).get(name, {})
            cols = [f"{r[k]:.3f}" if k in r else "-"
                    for k in ("time_vs_timm", "time_vs_inception", "time_vs_ours_ref")]
            peak = f"{e['peak_mb']:.0f}" if e["peak_mb"] is not None else "-"
            act = f"{e['saved_mb_per_image']:.1f}" if e["saved_mb_per_image"] is not None else "-"
            lines.append(f"{mode:7s} {name:11s} {e['median_ms']:10.2f} {e['img_per_s']:10.1f} "
                         f"{cols[0]:>8s} {cols[1]:>8s} {cols[2]:>7s} {e['median_cpu_ms']:9.1f} {peak:>9s} "
                         f"{act:>10s}" + (f"  ({e['note']})" if e.get("note") else ""))
    return "\n".join(lines)
