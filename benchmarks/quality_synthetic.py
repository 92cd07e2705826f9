"""Quality of the CFT variants on synthetic features with a planted Assume-Negative bias (B5-style).

Features x ~ N(0, I); each category has a true logistic row; full labels are drawn from it. Partial labels:
`uniform` keeps each label with probability r; `salient` keeps a positive with a probability that grows
with a nuisance direction of the features (an annotator bias: conspicuous positives get labeled), while
negatives are kept with probability r. The *baseline* row is a logistic regression fitted with Assume
Negative (unknown → negative) on all training images with almost no regularization, so that, like a deep
model memorizing its pseudo-labels, it uses the label-free dimensions (only `--signal` of the `--d`
dimensions carry signal) to push its false negatives down. CFT variants re-fit
it on known labels only. As with a real trainer, 15% of the training images are held out as a validation
split that the baseline never trains on; its *partial* labels are the CFT selection split. (Selecting on a
hold-out of images the baseline was trained on favours the trained row, which has fitted those labels.)
Everything is scored on a fully labeled test set that no selection ever sees; the oracle is fitted on the
full labels of the same training images.

Beside bp, ga and refit, em (which also learns from the unknown labels) runs alone and in an ``auto`` over all four,
with the share of the gap between the known-label row and the all-label row (λ tuned on test) that it closes.

    python benchmarks/quality_synthetic.py            # 3 seeds x {0.1, 0.3} x {uniform, salient}
    python benchmarks/quality_synthetic.py --quick
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_cft import CFTConfig, choose_per_category, fit_cft  # noqa: E402
from hf_cft.engine.logistic import Solver, example_weights, solve_logistic  # noqa: E402
from hf_cft.engine.views import Split, ViewFactory  # noqa: E402
from hf_cft.evaluation import score_split  # noqa: E402


def make_problem(seed: int, ratio: float, protocol: str, n: int, n_test: int, d: int, c: int, signal: int):
    rng = np.random.default_rng(seed)
    w_true = np.zeros((c, d))
    w_true[:, :signal] = rng.normal(size=(c, signal)) * 2.0 / np.sqrt(signal)
    b_true = np.full(c, -2.5)
    u = rng.normal(size=(c, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)

    def draw(k):
        x = rng.normal(size=(k, d)).astype(np.float32)
        p = 1 / (1 + np.exp(-(x @ w_true.T + b_true)))
        return x, (rng.random(p.shape) < p).astype(np.int8)

    x, y = draw(n)
    xt, yt = draw(n_test)
    if protocol == "uniform":
        m = rng.random(y.shape) < ratio
    else:
        sal = 1 / (1 + np.exp(-3.0 * (x @ u.T)))  # conspicuousness of each (image, category)
        p_pos = np.clip(2 * ratio * sal, 0, 1)
        m = np.where(y == 1, rng.random(y.shape) < p_pos, rng.random(y.shape) < ratio)
    return x, y, m, xt, yt


def fit_lr(x, y, mask, lam=1e-3):
    """Logistic regression per category on the masked labels (the AN baseline, or the oracle)."""
    split = Split.from_arrays(x.astype(np.float64), y, mask, "training")
    view = ViewFactory(split, torch.device("cpu"), torch.float64, 0.0).view(list(range(y.shape[1])))
    c, d = y.shape[1], x.shape[1]
    w, b, _ = solve_logistic(view, torch.zeros(c, 1, d, dtype=torch.float64), torch.zeros(c, 1, dtype=torch.float64),
                             torch.tensor([[lam]], dtype=torch.float64), torch.zeros(c, 1, d, dtype=torch.float64),
                             example_weights(view, False), Solver(max_iter=300))
    return w[:, 0].float().numpy(), b[:, 0].float().numpy()


def evaluate(w, b, xt, yt):
    s = xt @ np.asarray(w).T + np.asarray(b)
    scores = score_split(s, yt)
    return scores.ap.value, scores.auroc.value, scores.per_category("ap")


LAMBDAS = [1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]


def known_label_upper_bound(x, y, m, xt, yt) -> float:
    """Per category, the L2 logistic regression on the known labels whose λ scores best on the *test* split:
    what a known-label refit could reach at most (reporting only; never used to choose anything)."""
    per = []
    for lam in LAMBDAS:
        w, b = fit_lr(x, y, m, lam)
        per.append(evaluate(w, b, xt, yt)[2])
    return float(np.nanmean(np.nanmax(np.array(per), axis=0)))


def print_table(table) -> None:
    print("\n| setting | known | method | test mAP | Δ vs baseline (min … max) | seeds better | "
          "improved / degraded |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for (protocol, ratio, name), rows in table.items():
        a = np.array(rows, dtype=float)
        if name.startswith("share"):
            print(f"| {protocol} | {ratio:.0%} | {name} | {100 * np.nanmean(a[:, 0]):.0f}% | | | |")
            continue
        fixed = name == "baseline" or "row" in name
        imp = "–" if fixed else f"{int(a[:, 2].sum())} / {int(a[:, 3].sum())}"
        delta = "–" if name == "baseline" else (f"{100 * a[:, 4].mean():+.2f} ({100 * a[:, 4].min():+.2f} … "
                                                 f"{100 * a[:, 4].max():+.2f})")
        better = "–" if fixed else f"{int((a[:, 4] > 0).sum())}/{len(a)}"
        print(f"| {protocol} | {ratio:.0%} | {name} | {100 * a[:, 0].mean():.2f} ± {100 * a[:, 0].std():.2f} | "
              f"{delta} | {better} | {imp} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 seed, 1000 steps")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="bp epochs / ga generations (default 5000; quick 1000)")
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--signal", type=int, default=64, help="dimensions that carry label signal")
    ap.add_argument("--baseline-l2", type=float, default=1e-5)
    ap.add_argument("--categories", type=int, default=10)
    ap.add_argument("--settings", nargs="+", default=["uniform:0.1", "uniform:0.3", "salient:0.1", "salient:0.3",
                                                       "null:0.1"],
                    help="protocol:ratio; 'null' = uniform labels and a head fitted on the FULL training labels "
                         "(nothing to fix)")
    ap.add_argument("--em", action=argparse.BooleanOptionalAction, default=True,
                    help="also run em (which learns from the unknown labels too), alone and in auto over all four")
    ap.add_argument("--small-selection", type=int, default=300,
                    help="also run auto with a selection split of only this many images (0: skip)")
    args = ap.parse_args()
    steps = args.steps or (1000 if args.quick else 5000)
    seeds = 1 if args.quick else args.seeds
    print(f"synthetic B5: N={args.n} train / {args.n // 2} test, d={args.d} ({args.signal} with signal), "
          f"C={args.categories}, seeds={seeds}, AN baseline L2={args.baseline_l2:g}, bp/ga up to {steps} steps "
          "(patience 300), selection: partial labels of a 15% validation split the baseline never saw")
    table = defaultdict(list)
    t0 = time.perf_counter()
    for setting in args.settings:
        protocol, ratio = setting.split(":")
        ratio = float(ratio)
        for seed in range(seeds):
            x, y, m, xt, yt = make_problem(seed, ratio, "uniform" if protocol == "null" else protocol, args.n,
                                           args.n // 2, args.d, args.categories, args.signal)
            n_val = int(0.15 * len(x))
            val = (x[:n_val], y[:n_val], m[:n_val])
            x, y, m = x[n_val:], y[n_val:], m[n_val:]
            full = np.ones_like(m)
            if protocol == "null":  # the head every partial-label method hopes for: nothing to fix
                w0, b0 = fit_lr(x, y, full, 1e-3)
            else:
                w0, b0 = fit_lr(x, np.where(m, y, 0), full, args.baseline_l2)
            base_map, base_mauc, base_per = evaluate(w0, b0, xt, yt)

            def record(name, w, b, base_per=base_per, base_map=base_map, protocol=protocol, ratio=ratio):
                mp, mauc, per = evaluate(np.asarray(w), np.asarray(b), xt, yt)
                table[(protocol, ratio, name)].append(
                    (mp, mauc, int((per > base_per + 1e-9).sum()), int((per < base_per - 1e-9).sum()),
                     mp - base_map))
                return mp

            table[(protocol, ratio, "baseline")].append((base_map, base_mauc, 0, 0, 0.0))
            runs = {}
            for v in ("bp", "ga", "refit", *(("em",) if args.em else ())):
                cfg = CFTConfig(variant=v, seed=seed, epochs=steps, generations=steps, show_progress=False)
                runs[v] = fit_cft(x, y, m, w0, b0, cfg, selection=val)
                record(f"+ CFT-{v}", runs[v].weight, runs[v].bias)
            auto = choose_per_category({v: runs[v] for v in ("bp", "ga", "refit")}, w0, b0)
            auto_map = record("+ CFT-auto (crossfit rule)", auto.weight, auto.bias)
            if args.em:
                with_em = choose_per_category(runs, w0, b0)
                record("+ CFT-auto with em (crossfit rule)", with_em.weight, with_em.bias)
            strict = {}
            for v in ("bp", "ga", "refit"):
                cfg = CFTConfig(variant=v, seed=seed, epochs=steps, generations=steps, show_progress=False,
                                selection_rule="strict")
                strict[v] = fit_cft(x, y, m, w0, b0, cfg, selection=val)
            paper = choose_per_category(strict, w0, b0)
            record("+ CFT-auto (strict rule, the paper's)", paper.weight, paper.bias)
            on_test = CFTConfig(variant="bp", seed=seed, epochs=steps, show_progress=False, selection_rule="strict")
            test_sel = fit_cft(x, y, m, w0, b0, on_test, selection=(xt, yt, np.ones_like(yt, bool)))
            record("+ CFT-bp selected on test (the paper's protocol)", test_sel.weight, test_sel.bias)
            if args.small_selection:
                k = args.small_selection
                small = {v: fit_cft(x, y, m, w0, b0, CFTConfig(variant=v, seed=seed, epochs=steps,
                                                                 show_progress=False),
                                    selection=(val[0][:k], val[1][:k], val[2][:k])) for v in ("bp", "refit")}
                sm = choose_per_category(small, w0, b0)
                record(f"+ CFT-auto (crossfit), bp+refit, {k}-image selection", sm.weight, sm.bias)
            upper = known_label_upper_bound(x, y, m, xt, yt)
            ow, ob = fit_lr(x, y, full, 1e-3)
            oracle = evaluate(ow, ob, xt, yt)[0]
            table[(protocol, ratio, "known-label row, λ tuned on test (upper bound)")].append(
                (upper, float("nan"), 0, 0, upper - base_map))
            table[(protocol, ratio, "all-label row (head oracle)")].append(
                (oracle, float("nan"), 0, 0, oracle - base_map))
            table[(protocol, ratio, "share of the upper bound's gain taken by auto")].append(
                ((auto_map - base_map) / (upper - base_map) if upper > base_map else float("nan"),
                 float("nan"), 0, 0, float("nan")))
            for name in ("+ CFT-em", "+ CFT-auto with em (crossfit rule)") if args.em else ():
                got = table[(protocol, ratio, name)][-1][0]
                table[(protocol, ratio, f"share of the known-label → all-label gap closed by {name[6:]}")].append(
                    ((got - upper) / (oracle - upper) if oracle > upper else float("nan"), float("nan"), 0, 0,
                     float("nan")))
            print(f"[{time.perf_counter() - t0:6.0f} s] {setting} seed {seed} done", flush=True)
        print_table({k: v for k, v in table.items() if k[0] == protocol and k[1] == ratio})
    print_table(table)
    print(f"\n{time.perf_counter() - t0:.0f} s on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
