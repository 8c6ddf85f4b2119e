"""CycleGAN training and translation speed: a plain reference loop against the engine, side by side.

Training: the plain loop is the reference implementation's ``optimize_parameters`` written out simply
(batch 1, float32, NCHW, six separate generator calls, separate real/fake discriminator calls, the python
``random`` image pool); the engine is :func:`core.engines.gan.trainer.train` with its defaults. Both use
the same architecture (ResNet-9 generators, 70x70 PatchGAN, instance norm, ngf = ndf = 64), the same
crop size and the same in-memory images, so the ratio measures the step, not disk I/O.

Translation: a plain per-image eval loop (``torch.no_grad``, float32, one image per call) against
:class:`core.engines.gan.translate.Translator` (batches, ``inference_mode``, ``amp=auto``) on 256 px
images.

Context, untimed: the FLOPs of one training step and of one translated image (torch's FlopCounterMode)
and the rate of a large matmul in fp32 and bf16, so each side's speed is also shown as a share of what
this machine's dense math can do in that side's precision.

Every measurement runs in its own fresh process (so peak RSS is that side's own), sides alternate for
``--rounds`` rounds and the best round of each counts: on a shared machine the best round is the one
least disturbed by other work. Prints one line per measurement and a summary; ``--json`` adds one JSON
line at the end.

    python bench/gan.py            # full: 128 px training, 256 px translation, 2 threads
    python bench/gan.py --quick    # smoke: 64 px, few iterations
    python bench/gan.py --amp fp32 # the engine without bf16 autocast (the plain side is fp32 anyway)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PHOTO_DIRS = (ROOT / "web" / "static" / "examples" / "content", Path("/work/shared/examples/content"))


def photo_paths() -> list[Path]:
    for d in PHOTO_DIRS:
        files = sorted(p for p in d.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if files:
            return files
    return []


def source_images(n: int, size: int):
    """``n`` RGB images of at least ``size`` px: the bundled photos, or seeded noise if none are found."""
    import numpy as np
    from PIL import Image

    photos = [Image.open(p).convert("RGB") for p in photo_paths()]
    if not photos:
        rng = np.random.default_rng(0)
        photos = [Image.fromarray(rng.integers(0, 256, (size * 2, size * 2, 3), dtype=np.uint8)) for _ in range(4)]
    out = []
    for i in range(n):
        im = photos[i % len(photos)]
        scale = size * 1.2 / min(im.size)
        out.append(im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC))
    return out


#: Floors of the engine/plain ratio by the engine's precision: with bf16 units the engine must clearly
#: win; without them it runs the plain side's arithmetic and must at least never be slower.
FLOORS = {"training": {"bf16": 1.5, "fp32": 1.0}, "translation": {"bf16": 2.0, "fp32": 1.0}}


def floor(part: str, precision: str) -> float:
    return FLOORS[part]["bf16" if "bf16" in precision else "fp32"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------------------------------
# Plain reference training step (batch 1, float32, no tricks)
# ---------------------------------------------------------------------------------------------------
class PlainPool:
    def __init__(self, size: int) -> None:
        self.size, self.images = size, []

    def query(self, images):
        import torch

        out = []
        for image in images:
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif random.uniform(0, 1) > 0.5:
                i = random.randint(0, self.size - 1)
                old = self.images[i].clone()
                self.images[i] = image
                out.append(old)
            else:
                out.append(image)
        return torch.cat(out, 0)


def plain_cyclegan_step(size: int, ngf: int):
    """The reference's ``optimize_parameters`` written out plainly; returns ``step(i)``."""
    import torch
    import torch.nn.functional as F

    from core.engines.gan.networks import DiscriminatorSpec, GeneratorSpec, init_weights

    torch.manual_seed(0)
    random.seed(0)
    spec = GeneratorSpec.from_name("resnet_9blocks", ngf=ngf, norm="instance")
    G_A, G_B = init_weights(spec.build()), init_weights(spec.build())
    D_A, D_B = (init_weights(DiscriminatorSpec("basic", ngf, 3, "instance").build()) for _ in range(2))
    opt_G = torch.optim.Adam(list(G_A.parameters()) + list(G_B.parameters()), lr=2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(list(D_A.parameters()) + list(D_B.parameters()), lr=2e-4, betas=(0.5, 0.999))
    pool_A, pool_B = PlainPool(50), PlainPool(50)
    imgs = [torch.from_numpy(__import__("numpy").array(im)).permute(2, 0, 1) for im in source_images(8, size)]

    def crop(t):
        y = random.randint(0, t.shape[1] - size)
        x = random.randint(0, t.shape[2] - size)
        return (t[:, y:y + size, x:x + size].float() / 127.5 - 1).unsqueeze(0)

    def gan(pred, real):
        return F.mse_loss(pred, torch.ones_like(pred) if real else torch.zeros_like(pred))

    def step(i: int) -> None:
        real_A, real_B = crop(imgs[i % 4]), crop(imgs[4 + (i * 3) % 4])
        fake_B = G_A(real_A)
        rec_A = G_B(fake_B)
        fake_A = G_B(real_B)
        rec_B = G_A(fake_A)
        for p in list(D_A.parameters()) + list(D_B.parameters()):
            p.requires_grad_(False)
        opt_G.zero_grad()
        idt_A = G_A(real_B)
        idt_B = G_B(real_A)
        loss_G = (gan(D_A(fake_B), True) + gan(D_B(fake_A), True)
                  + F.l1_loss(rec_A, real_A) * 10 + F.l1_loss(rec_B, real_B) * 10
                  + F.l1_loss(idt_A, real_B) * 5 + F.l1_loss(idt_B, real_A) * 5)
        loss_G.backward()
        opt_G.step()
        for p in list(D_A.parameters()) + list(D_B.parameters()):
            p.requires_grad_(True)
        opt_D.zero_grad()
        fb = pool_B.query(fake_B.detach())
        loss_D_A = (gan(D_A(real_B), True) + gan(D_A(fb.detach()), False)) * 0.5
        loss_D_A.backward()
        fa = pool_A.query(fake_A.detach())
        loss_D_B = (gan(D_B(real_A), True) + gan(D_B(fa.detach()), False)) * 0.5
        loss_D_B.backward()
        opt_D.step()

    return step


def plain_training(size: int, iterations: int, warmup: int, threads: int, ngf: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    step = plain_cyclegan_step(size, ngf)
    for i in range(warmup):
        step(i)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + iterations):
        step(i)
    seconds = time.perf_counter() - t0
    return {"side": "plain", "it_per_s": iterations / seconds, "seconds": seconds, "precision": "fp32",
            "peak_rss_mb": peak_rss_mb()}


def engine_training(size: int, iterations: int, warmup: int, threads: int, ngf: int, amp: str = "auto") -> dict:
    """``atelier cyclegan train`` as a user runs it: images from files on disk, its own data pipeline,
    progress lines, checkpoints at the default period and the final model. Its ``it_per_s`` counts the
    steps after its warm-up, as the plain side's does."""
    import contextlib
    import io

    import torch

    from atelier.cli import main as atelier_main

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        for side, images in (("A", source_images(8, size)[:4]), ("B", source_images(8, size)[4:])):
            (Path(tmp) / side).mkdir()
            for i, im in enumerate(images):
                im.save(Path(tmp) / side / f"{i}.png")
        args = ["cyclegan", "train", "--a", f"{tmp}/A", "--b", f"{tmp}/B", "-o", f"{tmp}/out",
                "--netG", "resnet_9blocks", "--ngf", str(ngf), "--ndf", str(ngf), "--netD", "basic",
                "--norm", "instance", "--size", str(size), "--preprocess", "crop", "--batch-size", "1",
                "--iterations", str(warmup + iterations), "--amp", amp, "--device", "cpu", "--json"]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = atelier_main(args)
        if rc != 0:
            raise RuntimeError(f"atelier {' '.join(args)} failed: {err.getvalue()[-2000:]}")
        result = json.loads(out.getvalue().strip().splitlines()[-1])
    return {"side": "engine", "it_per_s": result["it_per_s"], "seconds": result["seconds"],
            "precision": result["precision"], "peak_rss_mb": peak_rss_mb()}


# ---------------------------------------------------------------------------------------------------
# Translation
# ---------------------------------------------------------------------------------------------------
def _generator(ngf: int):
    import torch

    from core.engines.gan.networks import GeneratorSpec, init_weights

    spec = GeneratorSpec.from_name("resnet_9blocks", ngf=ngf, norm="instance")
    return init_weights(spec.build(), generator=torch.Generator().manual_seed(0)), spec


def plain_translation(size: int, n_images: int, threads: int, ngf: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    torch.set_num_threads(threads)
    net, _ = _generator(ngf)
    net.eval()
    images = [im.resize((size, size)) for im in source_images(n_images, size)]

    def one(im):
        x = torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div(127.5).sub(1).unsqueeze(0)
        with torch.no_grad():
            y = net(x)[0]
        return Image.fromarray(((y.permute(1, 2, 0).numpy() + 1) / 2 * 255).clip(0, 255).astype(np.uint8))

    one(images[0])  # warm-up
    t0 = time.perf_counter()
    for im in images:
        one(im)
    seconds = time.perf_counter() - t0
    return {"side": "plain", "images_per_s": n_images / seconds, "seconds": seconds, "precision": "fp32",
            "peak_rss_mb": peak_rss_mb()}


def engine_translation(size: int, n_images: int, threads: int, ngf: int, amp: str = "auto") -> dict:
    import torch

    from core.engines.gan.translate import Translator

    torch.set_num_threads(threads)
    net, spec = _generator(ngf)
    tr = Translator(net, spec, device="cpu", amp=amp)
    images = [im.resize((size, size)) for im in source_images(n_images, size)]
    tr.translate(images, batch_size=4)  # warm-up: the same batch shapes as measured (kernels are JIT-built per shape)
    t0 = time.perf_counter()
    tr.translate(images, batch_size=4)
    seconds = time.perf_counter() - t0
    return {"side": "engine", "images_per_s": n_images / seconds, "seconds": seconds,
            "precision": "+".join(sorted(tr.precisions_used)), "peak_rss_mb": peak_rss_mb()}


# ---------------------------------------------------------------------------------------------------
# What the machine can do, and how much work each side does
# ---------------------------------------------------------------------------------------------------
def ceilings(threads: int, n: int = 4096, reps: int = 6) -> dict:
    """Achieved FLOP/s of an n x n x n matmul in fp32 and, where the CPU runs it natively, bf16: the
    practical ceiling for dense math. bf16 is ``None`` where it would be emulated (60x slower)."""
    import torch

    from core.engines.device import cpu_has_fast_bf16

    torch.set_num_threads(threads)
    out: dict = {"fp32": None, "bf16": None}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if name == "bf16" and not cpu_has_fast_bf16():
            continue
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        a @ b
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        out[name] = 2 * n**3 * reps / (time.perf_counter() - t)
    return out


def work(size: int, translate_size: int, ngf: int) -> dict:
    """FLOPs of one training step (the same maths on both sides) and of one translated image, counted by
    torch's FlopCounterMode (untimed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    step = plain_cyclegan_step(size, ngf)
    with FlopCounterMode(display=False) as train_count:
        step(0)
    net, _ = _generator(ngf)
    with torch.no_grad(), FlopCounterMode(display=False) as translate_count:
        net.eval()(torch.zeros(1, 3, translate_size, translate_size))
    return {"train_step_flops": float(train_count.get_total_flops()),
            "translate_image_flops": float(translate_count.get_total_flops())}


MEASURES = {"plain_training": plain_training, "engine_training": engine_training,
            "plain_translation": plain_translation, "engine_translation": engine_translation}


#: Everything a child process may be asked to run: the timed sides, and the untimed context.
TASKS = {**MEASURES, "ceilings": ceilings, "work": work}


def _child(name: str, kwargs: dict, queue) -> None:
    queue.put(TASKS[name](**kwargs))


def measure(name: str, **kwargs) -> dict:
    """Run one measurement in a fresh process (its own allocator state and peak RSS)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, kwargs, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, few iterations")
    ap.add_argument("--size", type=int, default=128, help="training crop size")
    ap.add_argument("--iterations", type=int, default=8, help="measured training iterations per side and round")
    ap.add_argument("--translate-size", type=int, default=256)
    ap.add_argument("--images", type=int, default=8, help="images per translation measurement")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp32"),
                    help="the engine's precision (the plain side is always fp32)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    from core.engines.device import cpu_model, why_no_fast_bf16

    no_bf16 = why_no_fast_bf16()
    if a.amp == "bf16" and no_bf16:
        ap.error(f"--amp bf16: {no_bf16}")
    if a.quick:
        a.size, a.iterations, a.translate_size, a.images, a.rounds, a.ngf = 64, 2, 64, 4, 1, 16
    train_kw = dict(size=a.size, iterations=a.iterations, warmup=2, threads=a.threads, ngf=a.ngf)
    tr_kw = dict(size=a.translate_size, n_images=a.images, threads=a.threads, ngf=a.ngf)
    print(f"CycleGAN ResNet-9 + PatchGAN, ngf {a.ngf}, {a.size} px training, {a.translate_size} px translation, "
          f"{a.threads} threads, {a.rounds} rounds; CPU: {cpu_model()}", flush=True)
    if no_bf16:
        print(f"bf16: {no_bf16}", flush=True)
    runs: dict[str, list[dict]] = {k: [] for k in MEASURES}
    for r in range(a.rounds):
        for name in MEASURES:
            kw = dict(train_kw if name.endswith("training") else tr_kw)
            if name.startswith("engine"):
                kw["amp"] = a.amp
            res = measure(name, **kw)
            runs[name].append(res)
            rate = res.get("it_per_s", res.get("images_per_s"))
            unit = "it/s" if "it_per_s" in res else "images/s"
            print(f"round {r + 1} {name:20s} {rate:8.3f} {unit}  {res['precision']}  "
                  f"peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)

    peak = measure("ceilings", threads=a.threads, n=2048 if a.quick else 4096)
    flops = measure("work", size=a.size, translate_size=a.translate_size, ngf=a.ngf)

    def best(name: str, key: str) -> dict:
        return max(runs[name], key=lambda x: x[key])

    def achieved(rate: float, flops_each: float, precision: str) -> dict:
        """GFLOP/s of a side and its share of this machine's matmul rate in that precision."""
        ceiling = peak.get(precision.split("+")[-1]) or peak["fp32"]
        return {"gflop_per_s": rate * flops_each / 1e9, "of_matmul_peak": rate * flops_each / ceiling}

    pt, et = best("plain_training", "it_per_s"), best("engine_training", "it_per_s")
    px, ex = best("plain_translation", "images_per_s"), best("engine_translation", "images_per_s")
    summary = {
        "training": {"plain_it_per_s": pt["it_per_s"], "engine_it_per_s": et["it_per_s"],
                     "ratio": et["it_per_s"] / pt["it_per_s"], "floor": floor("training", et["precision"]),
                     "plain_precision": pt["precision"], "engine_precision": et["precision"],
                     "plain_peak_rss_mb": pt["peak_rss_mb"], "engine_peak_rss_mb": et["peak_rss_mb"]},
        "translation": {"plain_images_per_s": px["images_per_s"], "engine_images_per_s": ex["images_per_s"],
                        "ratio": ex["images_per_s"] / px["images_per_s"],
                        "floor": floor("translation", ex["precision"]),
                        "plain_precision": px["precision"], "engine_precision": ex["precision"],
                        "plain_peak_rss_mb": px["peak_rss_mb"], "engine_peak_rss_mb": ex["peak_rss_mb"]},
        "threads": a.threads, "size": a.size, "translate_size": a.translate_size, "ngf": a.ngf, "quick": a.quick,
        "cpu": cpu_model(),
        "matmul_gflop_per_s": {k: (v / 1e9 if v is not None else None) for k, v in peak.items()},
        "bf16": None if no_bf16 else {"matmul_gflop_per_s": peak["bf16"] / 1e9},
        "bf16_reason": no_bf16,
        "train_step_gflop": flops["train_step_flops"] / 1e9,
        "translate_image_gflop": flops["translate_image_flops"] / 1e9,
    }
    for part, side, rate, key in (("training", "plain", pt, "it_per_s"), ("training", "engine", et, "it_per_s"),
                                  ("translation", "plain", px, "images_per_s"),
                                  ("translation", "engine", ex, "images_per_s")):
        each = flops["train_step_flops" if part == "training" else "translate_image_flops"]
        summary[part][f"{side}_achieved"] = achieved(rate[key], each, rate["precision"])
    t, x = summary["training"], summary["translation"]
    print(f"training    : engine {t['engine_it_per_s']:.3f} it/s ({t['engine_precision']}) vs plain "
          f"{t['plain_it_per_s']:.3f} it/s ({t['plain_precision']}) = {t['ratio']:.2f}x (floor {t['floor']}x)")
    print(f"translation : engine {x['engine_images_per_s']:.3f} img/s ({x['engine_precision']}) vs plain "
          f"{x['plain_images_per_s']:.3f} img/s ({x['plain_precision']}) = {x['ratio']:.2f}x (floor {x['floor']}x)")
    m = summary["matmul_gflop_per_s"]
    print(f"work        : {summary['train_step_gflop']:.1f} GFLOP per training step, "
          f"{summary['translate_image_gflop']:.1f} GFLOP per translated image; a large matmul runs "
          f"{m['fp32']:.0f} GFLOP/s fp32, " + (f"{m['bf16']:.0f} GFLOP/s bf16 here" if m["bf16"] else "bf16 not measured"))
    for part in ("training", "translation"):
        r = summary[part]
        print(f"achieved    : {part:11s} engine {r['engine_achieved']['gflop_per_s']:.0f} GFLOP/s "
              f"({r['engine_achieved']['of_matmul_peak']:.0%} of the {r['engine_precision']} matmul rate), plain "
              f"{r['plain_achieved']['gflop_per_s']:.0f} GFLOP/s ({r['plain_achieved']['of_matmul_peak']:.0%} of fp32)")
    if a.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
