"""B1 / B2: speed of the CFT engine, side by side with the authors' package (``mlcpl``) and the matmul floor.

B1 (seconds per category row): random float32 features, N = 10,000 training images, d = 2048, 10% known,
100 epochs / generations, no early stop, C = 4 and C = 80 categories. In one run, interleaved, for each C:
the GA's matmul floor (the batched product of each row's known fit rows with its children, the one product a
generation cannot avoid), ``mlcpl`` when it is installed (its per-row loop ``mlcpl.cft.CFT`` with ``BP`` and
``GAForLinear``, timed on a few rows and reported per row: its cost does not depend on C), and hf_cft.

B2 (whole COCO-shaped run on the CPU): N = 20,000, C = 80, d = 2048, 10% known, 1,000 steps; total seconds of
``fit_cft`` per variant (bp, ga, refit, and em with ``--b2-variants``; the default selection rule) next to mlcpl's
per-row time × C.
``--b2-n`` / ``--b2-steps`` scale it down (the output says so).

    pip install mlcpl                                  # optional, in the benchmark's own environment
    python benchmarks/engine.py --repeat 3             # B1, each line the median of 3 interleaved runs
    python benchmarks/engine.py --b2 --skip-b1         # B2 at full size
    python benchmarks/engine.py --b2 --skip-b1 --b2-n 10000 --b2-steps 200   # B2 scaled
    python benchmarks/engine.py --calibrate            # the throughputs behind hf_cft.engine.plan.COST
    python benchmarks/engine.py --profile ga --c 80    # where a variant's time goes (cProfile)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import logging
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_cft import CFTConfig, fit_cft  # noqa: E402
from hf_cft.engine.plan import bp_fit_view  # noqa: E402
from hf_cft.engine.views import Split, ViewFactory  # noqa: E402

try:  # the authors' package: optional, never a dependency of hf_cft
    import mlcpl.cft as mlcpl_cft
    import mlcpl.cft.optimization_method as mlcpl_opt
    from mlcpl.losses import PartialAsymmetricWithLogitLoss
    from mlcpl.metrics import partial_multilabel_average_precision
except Exception as err:  # noqa: BLE001 - any import failure means "not available"
    mlcpl_cft = None
    MLCPL_MISSING = f"mlcpl is not installed ({type(err).__name__}): `pip install mlcpl` to compare with it"
else:
    MLCPL_MISSING = None


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {dev}; load average {load}")


def make_data(n: int, d: int, c: int, known: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    y = (rng.random((n, c)) < 0.3).astype(np.int8)
    m = rng.random((n, c)) < known
    w = (rng.standard_normal((c, d), dtype=np.float32) * 0.02)
    b = np.zeros(c, dtype=np.float32)
    return x, y, m, w, b


@contextlib.contextmanager
def quiet():
    """hf_cft's warnings off (the tiny warm-up problems have thin selection evidence by design)."""
    log = logging.getLogger("hf_cft")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str = "cpu"):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def split_rows(n: int, fraction: float, seed: int):
    perm = np.random.default_rng(seed).permutation(n)
    k = int(round(fraction * n))
    return np.sort(perm[k:]), np.sort(perm[:k])


# -- the authors' package -------------------------------------------------------------------------------------
def mlcpl_per_row(x, y, m, w, b, rows, steps, variant, device, cfg, population=50) -> float:
    """Seconds per row of ``mlcpl.cft.CFT`` on ``rows`` (its own per-row loop), ``steps`` epochs/generations."""
    fit_rows, sel_rows = split_rows(len(x), cfg.selection_fraction, cfg.seed)
    yf = np.where(m, y, np.nan).astype(np.float32)
    z_fit, z_sel = torch.from_numpy(x[fit_rows]), torch.from_numpy(x[sel_rows])
    y_fit, y_sel = torch.from_numpy(yf[fit_rows][:, rows]), torch.from_numpy(yf[sel_rows][:, rows])
    heads = []
    for c in rows:
        lin = torch.nn.Linear(x.shape[1], 1)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w[c:c + 1]))
            lin.bias.fill_(float(b[c]))
        heads.append(lin)
    if variant == "bp":
        loss = PartialAsymmetricWithLogitLoss(clip=cfg.clip, gamma_pos=cfg.gamma_pos, gamma_neg=cfg.gamma_neg,
                                              reduction="sum")
        opt = mlcpl_opt.BP(loss_fn=loss, optimizer_class=torch.optim.Adam, optimizer_kwargs={"lr": cfg.lr},
                           device=device)
    else:
        opt = mlcpl_opt.GAForLinear(metric=partial_multilabel_average_precision, num_pop=population,
                                    Cr=cfg.crossover_rate, mutation_p=cfg.mutation_probability,
                                    mutation_range=cfg.mutation_range, elitism=cfg.elitism, device=device)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every epoch
        t, _ = timed(lambda: mlcpl_cft.CFT(heads, training_data=(z_fit, y_fit), validation_data=(z_sel, y_sel),
                                           optimizer=opt, epochs=steps, early_stopping=None,
                                           validation_metric=partial_multilabel_average_precision, device=device),
                     device)
    return t / len(rows)


# -- the matmul floor ----------------------------------------------------------------------------------------
def ga_floor(x, y, m, w, cats, steps, population, device, cfg, timed_steps: int) -> float:
    """Seconds per row of the GA's unavoidable products: every row's known fit rows × its ``population − 1``
    children, once per generation, computed the fastest way measured (one batched product of the block, or one
    product per row); timed over ``timed_steps`` generations and scaled to ``steps``."""
    fit_rows, _ = split_rows(len(x), cfg.selection_fraction, cfg.seed)
    split = Split.from_arrays(x[fit_rows], y[fit_rows], m[fit_rows], "training")
    view = ViewFactory(split, torch.device(device), torch.float32, cfg.dense_threshold).view(list(cats))
    k = population - 1
    cand = torch.from_numpy(w[list(cats)]).to(device).unsqueeze(1).repeat(1, k, 1)
    xt = view.x.transpose(1, 2) if view.kind == "gathered" else None
    rows = [view.x[i, :int(view.mask[i, 0].sum())] for i in range(len(cats))] if xt is not None else None

    def batched():
        for _ in range(timed_steps):
            torch.bmm(cand, xt) if xt is not None else view.scores(cand, cand[..., 0])

    def per_row():
        for _ in range(timed_steps):
            for i, r in enumerate(rows):
                r @ cand[i].T

    best = float("inf")
    for fn in (batched, per_row) if rows is not None else (batched,):
        fn()
        best = min(best, timed(fn, device)[0])
    return best / len(cats) * steps / timed_steps


# -- B1 ------------------------------------------------------------------------------------------------------
def run_b1(args, device: str) -> None:
    print(f"B1: N={args.n} d={args.d} known={args.known:.0%} steps={args.steps} (no early stop), device={device}, "
          f"seconds per category row; mlcpl on {args.mlcpl_rows} row(s), its GA over {args.mlcpl_ga_steps} "
          f"generations scaled to {args.steps}; each line the median of {args.repeat} interleaved run(s)")
    if MLCPL_MISSING:
        print(f"  {MLCPL_MISSING}")
    base = dict(patience=None, show_progress=False, device=device, epochs=args.steps, generations=args.steps,
                selection_rule="strict")
    warm = make_data(500, args.d, 2, 0.5, seed=1)
    for v in ("bp", "ga"):  # first-call costs (allocator, thread pool) stay out of the figures
        with quiet():
            fit_cft(*warm, CFTConfig(variant=v, **{**base, "epochs": 3, "generations": 3}))
    for n_cat in args.c:
        x, y, m, w, b = make_data(args.n, args.d, n_cat, args.known)
        cfg_bp = CFTConfig(variant="bp", **base)
        cfg_ga = CFTConfig(variant="ga", population_size=args.population, **base)
        rows = list(range(min(args.mlcpl_rows, n_cat)))
        plan = describe_plan(x, y, m, cfg_bp, device)
        runs: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            got = {"floor": ga_floor(x, y, m, w, range(n_cat), args.steps, args.population, device, cfg_ga,
                                     args.floor_steps)}
            if mlcpl_cft is not None:
                got["mlcpl bp"] = mlcpl_per_row(x, y, m, w, b, rows, args.steps, "bp", device, cfg_bp)
            got["hf_cft bp"] = timed(lambda: fit_cft(x, y, m, w, b, cfg_bp), device)[0] / n_cat
            if mlcpl_cft is not None:
                got["mlcpl ga"] = mlcpl_per_row(x, y, m, w, b, rows[:1], args.mlcpl_ga_steps, "ga", device, cfg_ga,
                                                args.population) * args.steps / args.mlcpl_ga_steps
            got["hf_cft ga"] = timed(lambda: fit_cft(x, y, m, w, b, cfg_ga), device)[0] / n_cat
            for k, v in got.items():
                runs.setdefault(k, []).append(v)
        med = {k: statistics.median(v) for k, v in runs.items()}

        def line(name, key, extra=""):
            if key not in med:
                return
            each = " ".join(f"{v:.3f}" for v in runs[key])
            print(f"  C={n_cat:<3} {name:<44} {med[key]:8.3f} s/row{extra}   [{each}]", flush=True)

        def vs(key):
            other = key.replace("hf_cft", "mlcpl")
            return f"  mlcpl/hf_cft {med[other] / med[key]:5.1f}x" if other in med else ""

        line("mlcpl bp (per-row loop)", "mlcpl bp")
        line(f"hf_cft bp ({plan})", "hf_cft bp", vs("hf_cft bp"))
        line(f"matmul floor ga p={args.population}", "floor")
        line(f"mlcpl ga p={args.population} (per-row loop)", "mlcpl ga")
        line(f"hf_cft ga p={args.population}", "hf_cft ga",
             vs("hf_cft ga") + f"  vs floor {med['hf_cft ga'] / med['floor']:4.2f}x")
    print(f"  load average after B1: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def describe_plan(x, y, m, cfg, device) -> str:
    """How the engine's planner runs this problem's BP blocks (shared / gathered, group size)."""
    from hf_cft.engine import plan as plan_mod

    fit_rows, _ = split_rows(len(x), cfg.selection_fraction, cfg.seed)
    split = Split.from_arrays(x[fit_rows], y[fit_rows], m[fit_rows], "training")
    factory = ViewFactory(split, torch.device(device), torch.float32, cfg.dense_threshold)
    cats = list(range(y.shape[1]))
    view = bp_fit_view(factory, cats)
    if view.kind != "gathered":
        return "shared pass"
    group = plan_mod.bp_groups(len(cats), view.length, x.shape[1], 4, torch.device(device))
    return f"gathered, groups of {group}"


# -- B2 ------------------------------------------------------------------------------------------------------
def run_b2(args, device: str) -> None:
    n, steps, n_cat = args.b2_n, args.b2_steps, 80
    scaled = "" if (n, steps) == (20_000, 1000) else "  [SCALED: the protocol is N=20000, 1000 steps]"
    print(f"B2: COCO-shaped whole run, N={n} C={n_cat} d=2048 known=10% steps={steps} (no early stop), "
          f"device={device}, default selection rule{scaled}")
    x, y, m, w, b = make_data(n, 2048, n_cat, 0.1, seed=1)
    base = dict(patience=None, show_progress=False, device=device, epochs=steps, generations=steps)
    took: dict[str, list[float]] = {}
    for variant in args.b2_variants:  # a variant named twice is timed twice (interleaved), its median kept
        t, _ = timed(lambda: fit_cft(x, y, m, w, b, CFTConfig(variant=variant, **base)), device)
        took.setdefault(variant, []).append(t)
        print(f"  hf_cft {variant:<6} {t:9.1f} s for {n_cat} categories", flush=True)
    median = {v: float(np.median(ts)) for v, ts in took.items()}
    if "em" in median and "refit" in median:
        print(f"  hf_cft em / refit: {median['em'] / median['refit']:.2f}  (medians; goal <= 3)")
    total = sum(median.get(v, 0.0) for v in ("bp", "ga", "refit"))
    print(f"  hf_cft {' + '.join(v for v in ('bp', 'ga', 'refit') if v in median)} {total:9.1f} s")
    if mlcpl_cft is None:
        print(f"  {MLCPL_MISSING}")
        return
    cfg = CFTConfig(**base)
    bp_row = mlcpl_per_row(x, y, m, w, b, [0, 1], steps, "bp", device, cfg)
    ga_steps = min(steps, args.mlcpl_ga_steps)
    ga_row = mlcpl_per_row(x, y, m, w, b, [0], ga_steps, "ga", device, cfg) * steps / ga_steps
    print(f"  mlcpl bp {bp_row:8.3f} s/row x {n_cat} = {bp_row * n_cat:9.1f} s   (2 rows timed)")
    print(f"  mlcpl ga {ga_row:8.3f} s/row x {n_cat} = {ga_row * n_cat:9.1f} s   (1 row, {ga_steps} generations "
          f"scaled to {steps})")
    print(f"  hf_cft bp+ga+refit / mlcpl bp alone: {total / (bp_row * n_cat):.2f}  (goal < 1)")
    print(f"  load average after B2: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


# -- calibration of the BP planner ---------------------------------------------------------------------------
def calibrate(args, device: str) -> None:
    """Throughputs behind ``hf_cft.engine.plan.COST``: GEMM flops/s, memory and cache bytes/s of a BP epoch's two
    products on gathered rows (the whole block; one cache-sized group, repeated), epoch overhead."""
    from hf_cft.engine import plan as plan_mod

    dev = torch.device(device)
    d, length, n_cat = 2048, 850, 64
    big = torch.randn(n_cat, length, d, device=dev)
    a, bm = torch.randn(8500, d, device=dev), torch.randn(d, 80, device=dev)
    row, g = torch.randn(n_cat, 1, d, device=dev), torch.randn(n_cat, 1, length, device=dev)
    group = max(1, min(n_cat, plan_mod.CACHE_BYTES // (length * d * 4)))  # a cache-sized group, as run_bp runs it
    small = big[:group].clone()

    def epoch(x, n):  # a BP epoch's two products on gathered rows: the logits and the gradient
        torch.bmm(row[:n], x.transpose(1, 2))
        torch.bmm(g[:n], x)

    res = {}
    for name, fn, work in (
        ("flops", lambda: a @ bm, 2 * 8500 * d * 80),
        ("memory", lambda: epoch(big, n_cat), 2 * big.numel() * 4),
        ("cache", lambda: [epoch(small, group) for _ in range(20)], 20 * 2 * small.numel() * 4),
    ):
        fn()
        res[name] = work / min(timed(fn, device)[0] for _ in range(3))
    x, y, m, w, b = make_data(400, 16, 1, 1.0)
    cfg = CFTConfig(variant="bp", epochs=200, patience=None, show_progress=False, device=device,
                    selection_rule="strict")
    short = dataclasses.replace(cfg, epochs=20)
    fit_cft(x, y, m, w, b, cfg)
    res["epoch"] = (timed(lambda: fit_cft(x, y, m, w, b, cfg), device)[0]
                    - timed(lambda: fit_cft(x, y, m, w, b, short), device)[0]) / 180  # fixed costs cancel
    print(f"calibration ({device}): flops {res['flops'] / 1e9:.1f} G/s, memory {res['memory'] / 1e9:.1f} GB/s, "
          f"cache {res['cache'] / 1e9:.1f} GB/s (groups of {group}), epoch overhead {res['epoch'] * 1e3:.2f} ms")


# -- where the time goes ------------------------------------------------------------------------------------
def run_profile(args, device: str) -> None:
    """``fit_cft`` of one variant at B1's largest C under ``cProfile``: the functions that take the time (the
    breakdowns quoted in ``docs/engine.md``)."""
    import cProfile
    import pstats

    n_cat = args.c[-1]
    x, y, m, w, b = make_data(args.n, args.d, n_cat, args.known)
    cfg = CFTConfig(variant=args.profile, population_size=args.population, patience=None, show_progress=False,
                    device=device, epochs=args.steps, generations=args.steps, selection_rule="strict")
    with quiet():  # first-call costs stay out
        fit_cft(*make_data(500, args.d, 2, 0.5, seed=1), dataclasses.replace(cfg, epochs=3, generations=3))
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    fit_cft(x, y, m, w, b, cfg)
    prof.disable()
    print(f"profile: hf_cft {args.profile} at N={args.n} C={n_cat} d={args.d} known={args.known:.0%} "
          f"steps={args.steps}: {time.perf_counter() - t:.1f} s under cProfile; the {args.profile_lines} functions "
          "with the most time of their own:")
    pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(args.profile_lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--known", type=float, default=0.1)
    ap.add_argument("--c", type=int, nargs="+", default=[4, 80], help="category counts of B1")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--population", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=1, help="interleaved repetitions; each line prints the median")
    ap.add_argument("--floor-steps", type=int, default=10, help="generations the floor is timed over (scaled)")
    ap.add_argument("--mlcpl-rows", type=int, default=2, help="rows mlcpl's BP is timed on")
    ap.add_argument("--mlcpl-ga-steps", type=int, default=20, help="generations mlcpl's GA is timed over (scaled)")
    ap.add_argument("--quick", action="store_true", help="C=4 and 16, 30 steps, one repetition")
    ap.add_argument("--skip-b1", action="store_true")
    ap.add_argument("--b2", action="store_true", help="also run B2 (COCO-shaped whole run)")
    ap.add_argument("--b2-n", type=int, default=20_000)
    ap.add_argument("--b2-steps", type=int, default=1000)
    ap.add_argument("--b2-variants", nargs="+", default=["bp", "ga", "refit"],
                    help="variants B2 times (add em to time it beside refit)")
    ap.add_argument("--calibrate", action="store_true", help="print the throughputs behind plan.COST and exit")
    ap.add_argument("--profile", choices=["bp", "ga", "refit"], default=None,
                    help="profile one variant's fit_cft at the largest --c (cProfile) and exit")
    ap.add_argument("--profile-lines", type=int, default=15)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for every contender (default: torch's); 1 on a machine shared with others, "
                         "where two spinning OpenMP threads per process slow small products down many times")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.c, args.steps, args.repeat, args.mlcpl_ga_steps = [4, 16], 30, 1, 5
    device = "cuda" if (args.device == "auto" and torch.cuda.is_available()) else args.device
    device = "cpu" if device == "auto" else device
    torch.manual_seed(0)
    print(machine())
    if args.calibrate:
        calibrate(args, device)
        return
    if args.profile:
        run_profile(args, device)
        return
    if not args.skip_b1:
        run_b1(args, device)
    if args.b2:
        run_b2(args, device)


if __name__ == "__main__":
    main()
