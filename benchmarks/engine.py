"""B1 (paper Table XIII protocol): seconds per category row for the CFT engine, against per-row loops.

Random float32 features, random labels, 10% known, N = 10,000 training images, d = 2048, a fixed number
of epochs / generations and no early stop. Each batched variant runs all categories as one problem; the
baselines are straightforward per-category (BP) and per-category, per-individual (GA) Python loops, the way
the paper's code works, run side by side on the same data. The floor is the bare matrix product a GA run
cannot avoid (one candidate-scoring product per generation).

    python benchmarks/engine.py --quick        # about a minute on 2 CPU cores
    python benchmarks/engine.py                # the full protocol (1000 steps)
    python benchmarks/engine.py --b2           # also B2, COCO-shaped (80 categories, N = 82,081)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_cft import CFTConfig, fit_cft  # noqa: E402
from hf_cft.losses import asymmetric_loss  # noqa: E402
from hf_cft.metrics import average_precision  # noqa: E402


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {dev}")


def make_data(n: int, d: int, c: int, known: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    y = (rng.random((n, c)) < 0.3).astype(np.int8)
    m = rng.random((n, c)) < known
    w = (rng.standard_normal((c, d), dtype=np.float32) * 0.02)
    b = np.zeros(c, dtype=np.float32)
    return x, y, m, w, b


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t, out


def split_rows(n: int, fraction: float, seed: int):
    perm = np.random.default_rng(seed).permutation(n)
    k = int(round(fraction * n))
    return np.sort(perm[k:]), np.sort(perm[:k])


def loop_bp(x, y, m, w, b, cats, epochs, device, cfg):
    """Per-category loop: one Adam per row on that category's known rows (the reference code's shape)."""
    fit_rows, sel_rows = split_rows(len(x), cfg.selection_fraction, cfg.seed)
    for c in cats:
        rf = fit_rows[m[fit_rows, c]]
        rs = sel_rows[m[sel_rows, c]]
        xf, yf = torch.from_numpy(x[rf]).to(device), torch.from_numpy(y[rf, c]).to(device)
        xs, ys = torch.from_numpy(x[rs]).to(device), torch.from_numpy(y[rs, c]).to(device)
        lin = torch.nn.Linear(x.shape[1], 1).to(device)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w[c:c + 1]))
            lin.bias.fill_(float(b[c]))
        opt = torch.optim.Adam(lin.parameters(), lr=cfg.lr)
        best = -1.0
        for _ in range(epochs):
            opt.zero_grad()
            loss = asymmetric_loss(lin(xf).squeeze(1), yf, None, cfg.gamma_neg, cfg.gamma_pos, cfg.clip)
            loss.backward()
            opt.step()
            with torch.no_grad():
                best = max(best, float(average_precision(lin(xs).squeeze(1), ys)))


def loop_ga(x, y, m, w, b, cats, generations, population, device, cfg):
    """Per-category, per-individual loop: each individual scored by its own product and metric call."""
    fit_rows, sel_rows = split_rows(len(x), cfg.selection_fraction, cfg.seed)
    gen = torch.Generator(device=device).manual_seed(0)
    for c in cats:
        rf = fit_rows[m[fit_rows, c]]
        rs = sel_rows[m[sel_rows, c]]
        xf, yf = torch.from_numpy(x[rf]).to(device), torch.from_numpy(y[rf, c]).to(device)
        xs, ys = torch.from_numpy(x[rs]).to(device), torch.from_numpy(y[rs, c]).to(device)
        row = torch.cat([torch.from_numpy(w[c]), torch.tensor([float(b[c])])]).to(device)
        pop = [row.clone() for _ in range(population)]
        fit = [float(average_precision(xf @ p[:-1] + p[-1], yf)) for p in pop]
        for _ in range(generations):
            elite = pop[int(np.argmax(fit))]
            probs = torch.tensor(fit) + 1e-12
            new = [elite]
            for _k in range(population - 1):
                i, j = torch.multinomial(probs, 2, replacement=True, generator=gen.manual_seed(_k)).tolist()
                u = torch.rand(row.shape, generator=gen, device=device)
                child = torch.where(u < cfg.crossover_rate, pop[i], pop[j])
                if float(torch.rand(1, generator=gen, device=device)) < cfg.mutation_probability:
                    child = child + (torch.rand(row.shape, generator=gen, device=device) * 2 - 1) * cfg.mutation_range
                new.append(child)
            pop = new
            fit = [float(average_precision(xf @ p[:-1] + p[-1], yf)) for p in pop]
            best = pop[int(np.argmax(fit))]
            float(average_precision(xs @ best[:-1] + best[-1], ys))


def floor_matmul(x, m, w, cats, generations, population, device, cfg) -> float:
    """Seconds of the bare candidate-scoring products of one GA run per row (no metric, no evolution)."""
    fit_rows, _ = split_rows(len(x), cfg.selection_fraction, cfg.seed)
    total = 0.0
    for c in cats:
        xf = torch.from_numpy(x[fit_rows[m[fit_rows, c]]]).to(device)
        cand = torch.from_numpy(np.repeat(w[c:c + 1], population, 0)).to(device)
        xf @ cand.T
        t, _ = timed(lambda: [xf @ cand.T for _ in range(generations)])
        total += t
    return total / len(cats)


def run_b1(args) -> None:
    device = "cuda" if (args.device == "auto" and torch.cuda.is_available()) else args.device
    device = "cpu" if device == "auto" else device
    steps, cats = args.steps, args.categories
    loop_steps = args.loop_steps
    x, y, m, w, b = make_data(args.n, args.d, cats, args.known)
    base = dict(patience=None, show_progress=False, device=device, epochs=steps, generations=steps,
                pygad_generations=steps)
    print(machine())
    print(f"B1: N={args.n} d={args.d} known={args.known:.0%} categories={cats} steps={steps} (no early stop), "
          f"device={device}; loops timed over {loop_steps} steps and scaled to {steps}")
    rows = []

    def report(name, per_row, baseline=None, floor=None):
        extra = ""
        if baseline is not None:
            extra += f"  loop/batched {baseline / per_row:6.1f}x"
        if floor is not None:
            extra += f"  vs floor {per_row / floor:5.2f}x"
        line = f"  {name:<40} {per_row:9.3f} s/row{extra}"
        rows.append(line)
        print(line, flush=True)

    warm = make_data(500, args.d, 2, 0.5, seed=1)
    for v in ("bp", "ga"):  # first-call costs (allocator, thread pool) stay out of the figures
        fit_cft(*warm, CFTConfig(variant=v, **{**base, "epochs": 5, "generations": 5}))
    t_bp, _ = timed(lambda: fit_cft(x, y, m, w, b, CFTConfig(variant="bp", **base)))
    t_bp_loop, _ = timed(lambda: loop_bp(x, y, m, w, b, range(args.loop_categories), loop_steps, device,
                                         CFTConfig(**base)))
    bp_loop = t_bp_loop / args.loop_categories * steps / loop_steps
    report("bp loop (per category)", bp_loop)
    report("bp batched", t_bp / cats, baseline=bp_loop)
    for p in (10, 50):
        cfg = CFTConfig(variant="ga", population_size=p, **base)
        floor = floor_matmul(x, m, w, range(cats), steps, p - 1, device, cfg)
        t_ga, _ = timed(lambda: fit_cft(x, y, m, w, b, cfg))
        t_loop, _ = timed(lambda: loop_ga(x, y, m, w, b, range(args.loop_categories), loop_steps, p, device, cfg))
        ga_loop = t_loop / args.loop_categories * steps / loop_steps
        report(f"matmul floor p={p}", floor)
        report(f"ga loop p={p}", ga_loop)
        report(f"ga batched p={p}", t_ga / cats, baseline=ga_loop, floor=floor)
    cfg = CFTConfig(variant="refit", **base)
    t_rf, res = timed(lambda: fit_cft(x, y, m, w, b, cfg))
    iters = max(r.steps_run for r in res.report)
    report(f"refit ({len(cfg.refit_l2)} L2 values, <= {iters} L-BFGS it.)", t_rf / cats)
    cfg = CFTConfig(variant="pygad", **base)
    t_pg, _ = timed(lambda: fit_cft(x, y, m, w, b, cfg, categories=range(args.loop_categories)))
    report(f"pygad p={cfg.pygad_population_size}", t_pg / args.loop_categories)
    print("paper (RTX 4090): bp 1.07 s/row, ga p=10 4.17 s/row, ga p=50 17.65 s/row")


def run_b2(args) -> None:
    device = "cuda" if (args.device == "auto" and torch.cuda.is_available()) else args.device
    device = "cpu" if device == "auto" else device
    for known in (0.1, 0.9):
        x, y, m, w, b = make_data(82081, 2048, 80, known, seed=1)
        for variant in ("bp", "ga"):
            cfg = CFTConfig(variant=variant, patience=None, show_progress=False, device=device,
                            epochs=args.b2_steps, generations=args.b2_steps)
            t, _ = timed(lambda: fit_cft(x, y, m, w, b, cfg))
            print(f"B2 known={known:.0%} {variant}: {t:8.1f} s for {args.b2_steps} steps x 80 categories "
                  f"({t / args.b2_steps * 5000 / 60:6.1f} min scaled to 5000 steps)", flush=True)
    print("paper (RTX 4090, whole runs with early stop): bp 2.7 min, ga 15.1 min")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps and categories (about a minute)")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--known", type=float, default=0.1)
    ap.add_argument("--categories", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--loop-steps", type=int, default=100, help="steps timed for the loop baselines")
    ap.add_argument("--loop-categories", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--b2", action="store_true", help="also run B2 (COCO-shaped)")
    ap.add_argument("--b2-steps", type=int, default=200)
    args = ap.parse_args()
    if args.quick:
        args.categories, args.steps, args.loop_steps, args.loop_categories = 4, 100, 10, 1
    torch.manual_seed(0)
    run_b1(args)
    if args.b2:
        run_b2(args)


if __name__ == "__main__":
    main()
