"""Style transfer: a plain implementation against the engine's defaults, side by side in one run.

    python bench/style_transfer.py                 # 256 px, baseline 300 steps, seeded random VGG-19
    python bench/style_transfer.py --quick         # 128 px, 100 steps: a smoke run
    python bench/style_transfer.py --size 512 --device cuda

Both sides optimise the same documented objective (core.engines.style.objective's docstring) with the
same weights and the same images:

* baseline -- the straightforward implementation written here: torchvision's ``vgg19().features``
  cut after the deepest layer used, targets computed once, content init, ``torch.optim.LBFGS``
  (history 100, lr 1, no line search) for ``--steps`` evaluations at one resolution, fp32, no tricks;
* engine -- ``core.engines.style_transfer.stylize`` with its defaults, given the same ``size`` and the
  same step budget (``--steps``; the schedule counts the steps of every level).

Printed: the baseline's final loss and time; the engine's time to reach that loss from its own trace
(and re-checked in fp32 on the engine's iterate at that step, because the engine may run in bf16);
their ratio; the losses at equal time; peak memory of each side; achieved FLOP/s of each side against
a large matmul on this machine in fp32 and bf16; and the precision each side ran in. Wall-clock
figures are only meaningful on an otherwise idle machine: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.engines.device import cpu_model, resolve_device, why_no_fast_bf16  # noqa: E402
from core.engines.style.engine import to_tensor  # noqa: E402
from core.engines.style.objective import Objective  # noqa: E402
from core.engines.style.options import StyleOptions, parse_layers  # noqa: E402
from core.engines.style_transfer import stylize  # noqa: E402
from core.engines.vgg import IMAGENET_MEAN, IMAGENET_STD, LAYER_NAMES, load_conv_params, load_vgg19  # noqa: E402
from core.images import load_image, resize_longest  # noqa: E402

EXAMPLES = Path("/work/shared/examples")
DEFAULT_CONTENT = EXAMPLES / "content" / "tubingen.jpg"
DEFAULT_STYLE = EXAMPLES / "styles" / "starry_night.jpg"


# -- the plain baseline ------------------------------------------------------------------------------
def gram_plain(f: torch.Tensor) -> torch.Tensor:
    _, c, h, w = f.shape
    m = f.view(c, h * w)
    return m @ m.t() / (c * h * w)


def tv_plain(x: torch.Tensor) -> torch.Tensor:
    return (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().sum() + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().sum()


def run_baseline(content: torch.Tensor, style: torch.Tensor, weights: str, steps: int, opts: StyleOptions,
                 device: torch.device) -> dict[str, Any]:
    """The documented objective, written the obvious way, optimised with torch.optim.LBFGS in fp32."""
    content_layers = parse_layers(opts.content_layers, "content_layers")
    style_layers = parse_layers(opts.style_layers, "style_layers")
    wanted = set(content_layers) | set(style_layers)
    last = max(LAYER_NAMES.index(n) for n in wanted)
    vgg = torchvision.models.vgg19(weights=None).features[: last + 1]
    convs = [m for m in vgg if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for conv, (w, b) in zip(convs, load_conv_params(weights, len(convs))):
            conv.weight.copy_(w)
            conv.bias.copy_(b)
    for i, m in enumerate(vgg):
        if isinstance(m, nn.ReLU):
            vgg[i] = nn.ReLU(inplace=False)
    vgg = vgg.to(device).eval().requires_grad_(False)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def features(img: torch.Tensor) -> dict[str, torch.Tensor]:
        out, h = {}, (img - mean) / std
        for name, module in zip(LAYER_NAMES, vgg):
            h = module(h)
            if name in wanted:
                out[name] = h
        return out

    t0 = time.perf_counter()
    with torch.no_grad():
        content_targets = {n: f for n, f in features(content).items() if n in content_layers}
        style_targets = {n: gram_plain(f) for n, f in features(style).items() if n in style_layers}
    x = content.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1, max_iter=steps, history_size=100, tolerance_grad=-1, tolerance_change=-1)
    trace: list[tuple[float, float]] = []

    def closure() -> torch.Tensor:
        opt.zero_grad()
        img = x.clamp(0, 1)
        f = features(img)
        c_loss = sum(w * F.mse_loss(f[n], content_targets[n]) for n, w in content_layers.items())
        s_loss = sum(w * F.mse_loss(gram_plain(f[n]), style_targets[n]) for n, w in style_layers.items())
        loss = opts.content_weight * c_loss + opts.style_weight * s_loss + opts.tv_weight * tv_plain(img)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        trace.append((time.perf_counter() - t0, loss.item()))
        return loss

    opt.step(closure)
    return {"trace": trace, "seconds": trace[-1][0], "loss": trace[-1][1], "steps": len(trace),
            "precision": "fp32", "levels": [f"{content.shape[-1]}x{content.shape[-2]}:{len(trace)}"]}


# -- measuring -----------------------------------------------------------------------------------------
class PeakRSS:
    """Samples this process's resident set size every 5 ms; ``peak`` is the maximum since ``start``."""

    def __init__(self) -> None:
        self.peak = 0
        self.start = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> "PeakRSS":
        self.peak = self.start = self.rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def measure_peak(device: torch.device, fn: Any) -> tuple[Any, int, int, str]:
    """``fn()``, its peak memory, and how much that peak exceeds what was in use when it started."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return out, peak, peak - before, "CUDA max allocated"
    with PeakRSS() as rss:
        out = fn()
    return out, rss.peak, rss.peak - rss.start, "peak RSS of the process"


def timed_cpu(fn: Any) -> tuple[Any, float, float]:
    """``fn()``, its CPU seconds, and the share of the thread budget it got: CPU s / (wall s x threads).

    Near 100% means the cores were ours; well below means another process competed and the wall-clock
    figures of that side are pessimistic (then the CPU-time ratio printed as well is the steadier one)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return out, cpu, cpu / (wall * torch.get_num_threads())


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int = 4096, reps: int = 6) -> float:
    """Achieved FLOP/s of an n x n x n matmul: the machine's practical ceiling for dense math."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t)


def step_flops(weights: str, opts: StyleOptions, width: int, height: int, dtype: torch.dtype,
               device: torch.device, content: torch.Tensor, style: torch.Tensor) -> float:
    """FLOPs of one loss+gradient evaluation at ``width`` x ``height``, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    content_layers = parse_layers(opts.content_layers, "content_layers")
    style_layers = parse_layers(opts.style_layers, "style_layers")
    vgg = load_vgg19(weights, list(content_layers) + list(style_layers), opts.pooling, device=device, dtype=dtype)
    c = F.interpolate(content, size=(height, width), mode="bilinear", align_corners=False)
    obj = Objective(vgg, c, [style], [1.0], content_layers, style_layers, opts.content_weight,
                    opts.style_weight, opts.tv_weight)
    x = c.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        loss, _ = obj(x)
        torch.autograd.grad(loss, x)
    return float(counter.get_total_flops())


def loss_at(trace: list[tuple[float, float]], t: float) -> float:
    """The newest loss a trace had reached by time ``t`` (inf before its first entry)."""
    best = float("inf")
    for secs, loss in trace:
        if secs > t:
            break
        best = loss
    return best


def time_to_reach(trace: list[tuple[float, float]], target: float) -> tuple[int, float] | None:
    for i, (secs, loss) in enumerate(trace):
        if loss <= target:
            return i, secs
    return None


def warm_up(device: torch.device, weights: str, opts: StyleOptions, size: int, bf16: bool) -> None:
    """One untimed evaluation per precision in use, so neither side pays one-off library start-up."""
    for dtype in (torch.float32, torch.bfloat16) if bf16 else (torch.float32,):
        vgg = load_vgg19(weights, ["relu5_1", "relu4_2"], opts.pooling, device=device, dtype=dtype)
        x = torch.rand(1, 3, size, size, device=device, requires_grad=True)
        feats = vgg(x, ["relu5_1"])
        torch.autograd.grad(feats["relu5_1"].float().sum(), x)


# -- main ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="longest side of the output (default 256)")
    ap.add_argument("--steps", type=int, default=300, help="baseline L-BFGS steps (default 300)")
    ap.add_argument("--quick", action="store_true", help="128 px and 100 baseline steps")
    ap.add_argument("--content", default=str(DEFAULT_CONTENT))
    ap.add_argument("--style", default=str(DEFAULT_STYLE))
    ap.add_argument("--weights", default="random", help="VGG-19 weights: random (default), a path, or '' for ImageNet")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads for both sides (default: torch's choice, one per core)")
    ap.add_argument("--matmul-size", type=int, default=4096,
                    help="side of the matmul that measures this machine's dense-math rate (default 4096)")
    ap.add_argument("--json", action="store_true", help="also print one JSON object with every figure")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.size, args.steps = 128, 100

    device = resolve_device(args.device)
    # bf16 is run and measured only where it is native: on CUDA, or on a CPU with bf16 units.
    no_bf16 = None if device.type == "cuda" else why_no_fast_bf16()
    opts = StyleOptions(size=args.size, steps=args.steps, device=device.type)  # the same step budget
    content_img, style_img = load_image(args.content), load_image(args.style)
    content = to_tensor(resize_longest(content_img, args.size), device)
    style = to_tensor(resize_longest(style_img, args.size), device)
    print(f"machine: {cpu_model()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"images: {Path(args.content).name} {content.shape[-1]}x{content.shape[-2]}, "
          f"{Path(args.style).name} {style.shape[-1]}x{style.shape[-2]}; weights: {args.weights or 'imagenet'}")
    if no_bf16:
        print(f"bf16: {no_bf16}")
    warm_up(device, args.weights, opts, args.size, bf16=no_bf16 is None)
    load_before = os.getloadavg()[0]

    (base, base_cpu_s, base_cpu), base_peak, base_added, peak_kind = measure_peak(
        device, lambda: timed_cpu(lambda: run_baseline(content, style, args.weights, args.steps, opts, device)))
    target = base["loss"]
    keep: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    first_output_step: list[int] = []

    def on_step(step: int, level: Any, x: torch.Tensor, parts: torch.Tensor) -> None:
        if level.is_output:
            if not first_output_step:
                first_output_step.append(step)
            if len(keep) < 400:  # every output-size iterate, for the fp32 re-check (no device sync here)
                keep[step] = (x.detach().clone(), parts.clone())

    (eng, eng_cpu_s, eng_cpu), eng_peak, eng_added, _ = measure_peak(
        device, lambda: timed_cpu(lambda: stylize(content_img, [style_img], opts, weights=args.weights, on_step=on_step)))
    load_after = os.getloadavg()[0]

    # fp32 re-check of the crossing: the engine's own trace may be bf16.
    fp32_vgg = load_vgg19(args.weights, list(opts.content_layers) + list(opts.style_layers), opts.pooling,
                          device=device, dtype=torch.float32)
    fp32_obj = Objective(fp32_vgg, content, [style], [1.0], parse_layers(opts.content_layers, "c"),
                         parse_layers(opts.style_layers, "s"), opts.content_weight, opts.style_weight,
                         opts.tv_weight)
    verified = None
    with torch.no_grad():
        for step in sorted(keep):
            x_kept, parts_kept = keep[step]
            if float(parts_kept[0]) > target * 1.01:
                continue
            loss32 = float(fp32_obj(x_kept)[0])
            if loss32 <= target:
                idx = step - first_output_step[0]
                verified = (step, eng.trace[idx][0], loss32)
                break

    reach = time_to_reach(eng.trace, target)
    t_equal = min(eng.seconds, base["seconds"])
    eng_at_equal = eng.loss if eng.seconds <= base["seconds"] else loss_at(eng.trace, t_equal)
    base_at_equal = loss_at(base["trace"], t_equal)

    # FLOP/s: FLOPs per step at each level (counted once, untimed) x steps / optimisation time.
    eng_dtype = torch.bfloat16 if eng.precision == "bf16" else torch.float32
    eng_flops = sum(n * step_flops(args.weights, opts, w, h, eng_dtype, device, content, style)
                    for w, h, n in eng.levels)
    base_flops = base["steps"] * step_flops(args.weights, opts, content.shape[-1], content.shape[-2],
                                            torch.float32, device, content, style)
    mm32 = matmul_flops(device, torch.float32, n=args.matmul_size)
    mm16 = None if no_bf16 else matmul_flops(device, torch.bfloat16, n=args.matmul_size)

    def gf(v: float) -> str:
        return f"{v / 1e9:,.0f} GFLOP/s"

    eng_rate = eng_flops / eng.trace[-1][0]
    base_rate = base_flops / base["seconds"]
    print(f"baseline: fp32, {base['steps']} L-BFGS steps at {base['levels'][0]}: final loss {target:.6g} "
          f"in {base['seconds']:.1f} s")
    print(f"engine:   {eng.precision}, levels {', '.join(f'{w}x{h}:{n}' for w, h, n in eng.levels)}, optimizer "
          f"{opts.optimizer}: final loss {eng.loss:.6g} (fp32, saved 8-bit image; last trace entry "
          f"{eng.trace[-1][1]:.6g}) in {eng.seconds:.1f} s")
    if reach is None:
        print(f"engine did NOT reach the baseline loss {target:.6g} (best {min(l for _, l in eng.trace):.6g})")
        ratio = 0.0
    else:
        ratio = base["seconds"] / reach[1]
        print(f"time to reach baseline loss: engine {reach[1]:.1f} s (output-size step {reach[0] + 1}) vs "
              f"baseline {base['seconds']:.1f} s -> {ratio:.2f}x faster "
              f"({reach[1] / base['seconds']:.3f} of the baseline's time)")
    if verified is not None:
        print(f"  re-checked in fp32: engine iterate at step {verified[0]} has loss {verified[2]:.6g} <= target, "
              f"reached at {verified[1]:.1f} s -> {base['seconds'] / verified[1]:.2f}x")
    else:
        print("  re-checked in fp32: no kept engine iterate is at or below the target in fp32")
    print(f"loss at equal time ({t_equal:.1f} s): engine {eng_at_equal:.6g} vs baseline {base_at_equal:.6g} "
          f"-> {'engine lower' if eng_at_equal < base_at_equal else 'engine NOT lower'}")
    print(f"peak memory ({peak_kind}): baseline {base_peak / 2**20:,.0f} MiB (+{base_added / 2**20:,.0f} MiB over "
          f"its start), engine {eng_peak / 2**20:,.0f} MiB (+{eng_added / 2**20:,.0f} MiB over its start)")
    print(f"achieved: engine {gf(eng_rate)} ({eng.precision}), baseline {gf(base_rate)} (fp32); large matmul "
          f"{gf(mm32)} fp32, {gf(mm16) + ' bf16' if mm16 else 'bf16 not measured'} -> engine at "
          f"{eng_rate / (mm16 if eng.precision == 'bf16' and mm16 else mm32):.0%} "
          f"of the {eng.precision} matmul rate, baseline at {base_rate / mm32:.0%} of fp32")
    print(f"CPU share (CPU time / wall x {torch.get_num_threads()} threads): baseline {base_cpu:.0%}, engine "
          f"{eng_cpu:.0%}; load average {load_before:.2f} before, {load_after:.2f} after. Well below 100% or a "
          "load above the thread count means another process competed and the times are not clean.")
    cpu_ratio = None
    if reach is not None and device.type == "cpu":
        # CPU seconds spent until the crossing, assuming the engine's CPU use was even over its run.
        eng_cpu_to_reach = eng_cpu_s * reach[1] / eng.seconds
        cpu_ratio = base_cpu_s / eng_cpu_to_reach
        print(f"in CPU time: baseline {base_cpu_s:.1f} CPU-s, engine ~{eng_cpu_to_reach:.1f} CPU-s to the baseline's "
              f"loss -> {cpu_ratio:.2f}x (less sensitive to other processes than wall-clock)")
    figures = {"size": args.size, "device": device.type, "baseline_steps": base["steps"],
               "baseline_loss": target, "baseline_seconds": base["seconds"], "baseline_precision": "fp32",
               "engine_precision": eng.precision, "engine_levels": eng.levels, "engine_loss": eng.loss,
               "engine_seconds": eng.seconds, "engine_seconds_to_baseline_loss": reach[1] if reach else None,
               "engine_seconds_to_baseline_loss_fp32_checked": verified[1] if verified else None,
               "speedup": ratio, "equal_time_seconds": t_equal, "engine_loss_at_equal_time": eng_at_equal,
               "baseline_loss_at_equal_time": base_at_equal, "baseline_peak_bytes": base_peak,
               "engine_peak_bytes": eng_peak,
               "baseline_added_bytes": base_added, "engine_added_bytes": eng_added, "engine_flops_per_s": eng_rate, "baseline_flops_per_s": base_rate,
               "matmul_fp32_flops_per_s": mm32, "matmul_bf16_flops_per_s": mm16, "cpu": cpu_model(),
               "bf16": None if no_bf16 else {"matmul_flops_per_s": mm16}, "bf16_reason": no_bf16,
               "threads": torch.get_num_threads(), "load_average": [load_before, load_after],
               "cpu_share": {"baseline": base_cpu, "engine": eng_cpu},
               "cpu_seconds": {"baseline": base_cpu_s, "engine": eng_cpu_s}, "cpu_time_speedup": cpu_ratio}
    floor_ok = reach is not None and reach[1] <= base["seconds"] / 3 and eng_at_equal < base_at_equal
    figures["floor_met"] = floor_ok
    print(f"floor (reach in <= 1/3 of the baseline's time, lower loss at equal time): {'met' if floor_ok else 'NOT met'}")
    if args.json:  # the last line, for scripts
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
