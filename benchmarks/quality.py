"""B5: quality on the embedded dataset — every baseline method of the trainer, without and with CFT.

Per (protocol, known ratio, seed, method): the small ResNet is pretrained on single-digit classification of the
training pool (the role ImageNet plays for COCO), then fine-tuned on the partially labeled mosaics with the
method (an, ignore, ll_r, selective, cl). CFT then runs bp, ga and refit on its features and keeps per category
the trained row or one of them (``auto``), selecting on the validation images the trainer held out (never trained
on, partially labeled), with the crossfit rule (default) and with the paper's strict rule side by side; em (which
also learns from the unknown labels) runs beside them, alone and in an ``auto`` over all four, and a row gives the
share of the gap between the known-label row and the all-label row (both λ tuned on test) that it closes; one row
selects bp on the *test* split (the paper's COCO protocol) to show how optimistic that is. Everything is scored
on the fully labeled test split. Headroom rows (reporting only): the known-label row and the all-label row, λ
tuned on test.

Two checks of the rule follow the table. *Calibration*: per cell, the pooled cross-fitted AUROC gain of ``auto``'s
categories on the selection labels against the test gain of the very rows it judged (``CFTResult.judged``, written
or not), as z = difference / its standard error; if the rule's evidence is honest, z has sd ≈ 1 across cells.
*Thresholds*: the same candidates decided again at ``selection_confidence`` 0.8 and 0.95 beside the default 0.9.

    python benchmarks/quality.py                                   # 5 seeds x {0.1, 0.3} x {uniform, salient}
    python benchmarks/quality.py --seeds 3 --ratios 0.1 --protocols uniform --methods an ignore
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_cft import CFTConfig, choose_per_category, fit_cft  # noqa: E402
from hf_cft.data import label_arrays, load_partial_dataset, partial_info  # noqa: E402
from hf_cft.evaluation import score_split  # noqa: E402
from hf_cft.head import CFTHead  # noqa: E402
from hf_cft.io import write_atomic  # noqa: E402
from hf_cft.metrics import partial_auroc  # noqa: E402
from hf_cft.metrics.ranking import counted_metric  # noqa: E402
from hf_cft.recipe import ORACLE, UPPER_BOUND, headroom_rows  # noqa: E402
from hf_cft.training import TrainArguments, pretrain_digits, train  # noqa: E402


def score(w, b, ze, ye, me):
    s = ze @ np.asarray(w, dtype=np.float32).T + np.asarray(b, dtype=np.float32)
    scores = score_split(s, ye, me)
    return scores.ap.value, scores.auroc.value, scores.per_category("ap")


CELLS = "b5_cells.json"
AUTO_SET = ("bp", "ga", "refit")  # the variants of the "+ CFT-auto" rows (the table's history)
AUTO_WITH_EM = "+ CFT-auto with em (crossfit rule)"
GAP_SHARE = "share of the known-label → all-label gap closed by"
CALIBRATION = "calibration of the crossfit evidence"
AT_CONFIDENCE = "auto at selection_confidence"
OTHER_CONFIDENCES = (0.8, 0.95)


def calibration(result, w0, b0, ze, ye, me, sel, seed: int, n_boot: int = 400) -> dict:
    """The pooled selection evidence of ``result`` (its categories' mean cross-fitted gain and that mean's SE, from
    resamples of each category's labels apart) beside the test gain of the very rows it judged (``result.judged``,
    written or not), in the selection metric (AUROC); and the SE of the same mean from resamples of the selection
    *images*, shared by every category, with and without the covariances between categories."""
    fitted = [r for r in result.report if r.skipped is None and r.oof_gain is not None]
    cats = [r.index for r in fitted]
    w1, b1 = result.judged[0].numpy(), result.judged[1].numpy()
    w0, b0 = np.asarray(w0, dtype=np.float32), np.asarray(b0, dtype=np.float32)
    judged = partial_auroc(ze @ w1.T + b1, ye, me).per_category
    trained = partial_auroc(ze @ w0.T + b0, ye, me).per_category
    se = np.array([r.gain_se for r in fitted])
    zs, ys, ms = sel
    new, old = (torch.from_numpy(np.ascontiguousarray((zs @ w.T + b).T[cats])).double()
                for w, b in ((w1, b1), (w0, b0)))
    n = len(zs)
    draws = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot)  # S × images
    counts = torch.from_numpy(draws).double().unsqueeze(0) * torch.from_numpy(ms.T[cats] > 0).double().unsqueeze(1)
    pos = torch.from_numpy(ys.T[cats] > 0)
    diff = (counted_metric("auroc", new, pos, counts) - counted_metric("auroc", old, pos, counts)).numpy()
    return {"selection": float(np.mean([r.oof_gain for r in fitted])), "se": float(np.sqrt((se**2).mean() / len(se))),
            "test": float(np.mean([judged[c] - trained[c] for c in cats])),
            "image_se": float(np.nanstd(np.nanmean(diff, axis=0))),
            "image_se_apart": float(np.sqrt(np.nansum(np.nanvar(diff, axis=1))) / len(cats))}


def print_calibration(rows: dict) -> None:
    """z of each cell's pooled selection gain against its test gain; the thresholds side by side."""
    cal = [v for k, vs in rows.items() if k[3] == CALIBRATION for v in vs]
    if cal:
        z = np.array([(c["selection"] - c["test"]) / c["se"] for c in cal])
        print(f"\n{CALIBRATION} (auto, AUROC): z = (pooled cross-fitted gain on the selection labels − the same "
              f"rows' mean test gain) / its SE, over {len(z)} cell(s): mean {z.mean():+.2f}, sd {z.std():.2f}, "
              f"|z| > 1.96 in {int((np.abs(z) > 1.96).sum())} (5% of cells: {0.05 * len(z):.1f}); an honest SE "
              "gives sd ≈ 1")
        ratio = np.array([c["image_se"] / c["image_se_apart"] for c in cal])
        print(f"the same mean's SE from resamples of the selection images shared by the categories, with / without "
              f"the covariances between categories: median {np.median(ratio):.2f} "
              f"({ratio.min():.2f} … {ratio.max():.2f}); above 1 if the categories' gains were correlated through "
              "their images, which the rule's SE (each category resampled apart) assumes they are not")
    by_threshold: dict = defaultdict(lambda: defaultdict(list))
    for (_, _, method, name), vs in rows.items():
        t = "0.9 (default)" if name == "+ CFT-auto (crossfit rule)" else name[len(AT_CONFIDENCE) + 1:] \
            if name.startswith(AT_CONFIDENCE) else None
        if t is not None:
            by_threshold[t][method] += [v["delta"] for v in vs]
    if len(by_threshold) < 2:
        return
    methods = list(next(iter(by_threshold.values())))
    print("\n| selection_confidence | Δ test mAP, every cell | worst cell | cells below −0.1 | "
          + " | ".join(methods) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(methods))
    for t in sorted(by_threshold):
        d = np.concatenate([np.array(v) for v in by_threshold[t].values()])
        per = " | ".join(f"{100 * np.mean(by_threshold[t][m]):+.2f}" for m in methods)
        print(f"| {t} | {100 * d.mean():+.2f} | {100 * d.min():+.2f} | {int((d < -0.001).sum())}/{len(d)} | {per} |")


def print_em_summary(rows: dict) -> None:
    """The issue's questions about em, one line per setting and method (test mAP, mean over seeds; em's share of
    the gap between the known-label and the all-label rows; the worst seed's change), then over every cell."""
    names = ("+ CFT-em", AUTO_WITH_EM, "+ CFT-auto (crossfit rule)")
    if not any(k[3] == "+ CFT-em" for k in rows):
        return
    print("\n| protocol | known | method | seeds | baseline | + CFT-auto | + CFT-em | + CFT-auto with em | "
          "known-label row (bound) | all-label row (oracle) | em: share of the gap | em: worst Δ | "
          "auto with em: worst Δ |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for protocol, ratio, method in dict.fromkeys(k[:3] for k in rows if k[3] == "+ CFT-em"):
        v = {name: 100 * np.array([r["map"] for r in rows[(protocol, ratio, method, name)]])
             for name in ("baseline", *names, UPPER_BOUND, ORACLE)}
        share = np.mean((v["+ CFT-em"] - v[UPPER_BOUND]) / (v[ORACLE] - v[UPPER_BOUND]))
        print(f"| {protocol} | {ratio:.0%} | {method} | {len(v['baseline'])} | "
              + " | ".join(f"{v[n].mean():.2f}" for n in ("baseline", names[2], names[0], names[1], UPPER_BOUND,
                                                            ORACLE))
              + f" | {100 * share:.0f}% | {(v[names[0]] - v['baseline']).min():+.2f} | "
              f"{(v[names[1]] - v['baseline']).min():+.2f} |")
    print()
    for name in names:
        d = np.concatenate([[r["delta"] for r in rs] for k, rs in rows.items() if k[3] == name])
        print(f"{name}: {len(d)} cells, Δ test mAP mean {100 * d.mean():+.2f}, worst {100 * d.min():+.2f}, "
              f"below −0.1: {int((d < -0.001).sum())}")
    settings = sorted({k[:2] for k in rows if k[2] == "an"})
    mean = {name: 100 * np.mean([np.mean([r["map"] for r in rows[(*s, "an", name)]]) for s in settings])
            for name in ("baseline", *names, UPPER_BOUND, ORACLE) if all((*s, "an", name) in rows for s in settings)}
    print(f"AN, mean over seeds and {len(settings)} setting(s): "
          + ", ".join(f"{name} {v:.2f}" for name, v in mean.items()))
    if UPPER_BOUND in mean and ORACLE in mean and mean[ORACLE] > mean[UPPER_BOUND]:
        share = (mean["+ CFT-em"] - mean[UPPER_BOUND]) / (mean[ORACLE] - mean[UPPER_BOUND])
        print(f"AN: em closes {100 * share:.0f}% of the mean gap between the known-label row and the all-label row "
              "(negative: below the known-label row)")


def load_cells(work: str, settings: dict) -> tuple[defaultdict, set]:
    """Rows and finished cells of an earlier run in ``work`` (empty when there is none)."""
    rows: defaultdict = defaultdict(list)
    path = os.path.join(work, CELLS)
    if not os.path.exists(path):
        return rows, set()
    with open(path) as f:
        saved = json.load(f)
    if saved.get("settings") != settings:
        sys.exit(f"{path} was written with {saved.get('settings')}, not {settings}: use another --work folder "
                 "or the same settings")
    for entry in saved["rows"]:
        rows[(entry["protocol"], entry["ratio"], entry["method"], entry["row"])] = entry["values"]
    print(f"resuming: {len(saved['done'])} cell(s) already done in {path}", flush=True)
    return rows, set(saved["done"])


def save_cells(work: str, rows: dict, done: set, settings: dict) -> None:
    """Write the rows and finished cells atomically, so a killed run resumes after its last finished cell."""
    saved = {"settings": settings, "done": sorted(done),
             "rows": [{"protocol": k[0], "ratio": k[1], "method": k[2], "row": k[3], "values": v}
                      for k, v in rows.items()]}
    write_atomic(os.path.join(work, CELLS), json.dumps(saved, default=float))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.3])
    ap.add_argument("--protocols", nargs="+", default=["uniform", "salient"])
    ap.add_argument("--methods", nargs="+", default=["an", "ignore", "ll_r", "selective", "cl"])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=1000, help="bp epochs / ga generations")
    ap.add_argument("--variants", nargs="+", default=["bp", "ga", "refit", "em"],
                    help="variants run under the crossfit rule, each a row; with em also auto over all of them")
    ap.add_argument("--skip-strict", action="store_true",
                    help="skip the strict rule's auto and bp selected on test (a shorter run)")
    ap.add_argument("--table", action="store_true", help="only print the table of the cells finished in --work")
    ap.add_argument("--work", default=None, help="folder for models and caches (default: a temporary one); "
                    "a killed run started again with the same --work skips the cells it finished")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    work = args.work or tempfile.mkdtemp(prefix="hf_cft_b5_")
    os.makedirs(work, exist_ok=True)
    rows, done = load_cells(work, {"epochs": args.epochs, "steps": args.steps})
    t0 = time.perf_counter()
    # seeds outermost: after k seeds the whole grid has k seeds, so a run stopped early still reads across settings
    for seed in range(0 if args.table else args.seeds):
        backbone = os.path.join(work, f"pretrained-digits-{seed}")  # shared by every cell of a seed
        for protocol in args.protocols:
            for ratio in args.ratios:
                if all(f"{protocol}-{ratio}-{seed}-{method}" in done for method in args.methods):
                    continue
                ds = load_partial_dataset("digits_mosaic", known_ratio=ratio, protocol=protocol, seed=seed)
                names = partial_info(ds["train"])["categories"]
                y, m, full = label_arrays(ds["train"], ("labels", "label_mask", "full_labels"))
                ye, me = label_arrays(ds["test"])
                pretrain_digits(backbone, seed=seed, pool_seed=seed, show_progress=False)
                for method in args.methods:
                    tag = f"{protocol}-{ratio}-{seed}-{method}"
                    if tag in done:
                        continue
                    out = os.path.join(work, f"base-{tag}")
                    finished = os.path.join(out, "train_report.json")  # written last by a finished train()
                    if os.path.exists(finished):
                        with open(finished) as f:
                            rep = json.load(f)
                    else:
                        rep = train(TrainArguments(known_ratio=ratio, protocol=protocol, seed=seed, method=method,
                                                   init_from=backbone, epochs=args.epochs, report_split=None,
                                                   output_dir=out))
                    head = CFTHead.from_pretrained(os.path.join(out, "best"), category_names=names)
                    cache = os.path.join(work, "features")
                    z = np.asarray(head.extract(ds["train"], cache_dir=cache, show_progress=False).features)
                    ze = np.asarray(head.extract(ds["test"], cache_dir=cache, show_progress=False).features)
                    val = np.asarray(rep["validation_rows"])
                    fit = np.setdiff1d(np.arange(len(z)), val)
                    sel = (z[val], y[val], m[val])
                    w0, b0 = head.weight, head.bias
                    base_map, base_mauc, base_per = score(w0, b0, ze, ye, me)
                    key = (protocol, ratio, method)

                    def record(name, w, b, key=key, base_map=base_map, base_per=base_per, ze=ze):
                        mp, mauc, per = score(w, b, ze, ye, me)
                        ok = ~np.isnan(per) & ~np.isnan(base_per)
                        rows[(*key, name)].append({"map": mp, "mauc": mauc, "delta": mp - base_map,
                                                   "improved": int((per[ok] > base_per[ok] + 1e-9).sum()),
                                                   "degraded": int((per[ok] < base_per[ok] - 1e-9).sum())})
                        return mp

                    rows[(*key, "baseline")].append({"map": base_map, "mauc": base_mauc, "delta": 0.0})
                    results = {}
                    for rule in ("crossfit",) if args.skip_strict else ("crossfit", "strict"):
                        runs = {v: fit_cft(z[fit], y[fit], m[fit], w0, b0,
                                           CFTConfig(variant=v, seed=seed, epochs=args.steps,
                                                     generations=args.steps, selection_rule=rule,
                                                     show_progress=False), selection=sel)
                                for v in (args.variants if rule == "crossfit" else AUTO_SET)}
                        results[rule] = choose_per_category({v: runs[v] for v in AUTO_SET if v in runs}, w0, b0)
                        if rule == "crossfit":
                            runs_crossfit = {v: runs[v] for v in AUTO_SET if v in runs}
                            for v, r in runs.items():
                                record(f"+ CFT-{v}", r.weight, r.bias)
                            if "em" in runs:
                                with_em = choose_per_category(runs, w0, b0)
                                record(AUTO_WITH_EM, with_em.weight, with_em.bias)
                    auto_map = record("+ CFT-auto (crossfit rule)", results["crossfit"].weight,
                                      results["crossfit"].bias)
                    rows[(*key, CALIBRATION)].append(calibration(results["crossfit"], w0, b0, ze, ye, me, sel, seed))
                    for t in OTHER_CONFIDENCES:  # the same candidates decided again at another threshold
                        again = choose_per_category({v: dataclasses.replace(r, config=dataclasses.replace(
                            r.config, selection_confidence=t)) for v, r in runs_crossfit.items()}, w0, b0)
                        record(f"{AT_CONFIDENCE} {t:g}", again.weight, again.bias)
                    if not args.skip_strict:
                        record("+ CFT-auto (strict rule, the paper's)", results["strict"].weight,
                               results["strict"].bias)
                        on_test = fit_cft(z[fit], y[fit], m[fit], w0, b0,
                                          CFTConfig(variant="bp", seed=seed, epochs=args.steps,
                                                    selection_rule="strict", show_progress=False),
                                          selection=(ze, ye, me))
                        record("+ CFT-bp selected on test (the paper's protocol)", on_test.weight, on_test.bias)
                    heads = {}
                    for h in headroom_rows(z, full, m, ze, ye, me, "ap"):
                        rows[(*key, h["method"])].append({"map": h["map"], "mauc": h["mauc"],
                                                          "delta": h["map"] - base_map})
                        heads[h["method"]] = h["map"]
                    if heads[UPPER_BOUND] > base_map:
                        rows[(*key, "share of the upper bound's gain taken by auto")].append(
                            {"map": (auto_map - base_map) / (heads[UPPER_BOUND] - base_map)})
                    for name in ("+ CFT-em", AUTO_WITH_EM):  # how far past the known-label bound the unknowns go
                        if (*key, name) in rows and heads[ORACLE] > heads[UPPER_BOUND]:
                            rows[(*key, f"{GAP_SHARE} {name[6:]}")].append(
                                {"map": (rows[(*key, name)][-1]["map"] - heads[UPPER_BOUND])
                                 / (heads[ORACLE] - heads[UPPER_BOUND])})
                    done.add(tag)
                    save_cells(work, rows, done, {"epochs": args.epochs, "steps": args.steps})
                    print(f"[{time.perf_counter() - t0:6.0f} s] {tag}: baseline {100 * base_map:.2f}, auto "
                          f"{100 * auto_map:.2f}", flush=True)
    print(f"\nB5 digits_mosaic: {len(done)} cell(s) (up to {args.seeds} seed(s) per setting), small ResNet "
          "pretrained on single digits then fine-tuned "
          f"{args.epochs} epochs per method; CFT bp/ga up to {args.steps} steps; selection on the trainer's held-out "
          "validation images; test split fully labeled")
    print("| protocol | known | baseline method | row | test mAP | Δ vs baseline (min … max) | seeds better | "
          "improved / degraded |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    for (protocol, ratio, method, name), rs in rows.items():
        if name == CALIBRATION or name.startswith(AT_CONFIDENCE):
            continue
        mp = np.array([r["map"] for r in rs])
        if name.startswith("share"):
            extent = f"{100 * mp.min():.0f}% … {100 * mp.max():.0f}%" if name.startswith(GAP_SHARE) else ""
            print(f"| {protocol} | {ratio:.0%} | {method} | {name} | {100 * mp.mean():.0f}% | {extent} | | |")
            continue
        d = np.array([r["delta"] for r in rs])
        cft = name.startswith("+")
        delta = f"{100 * d.mean():+.2f} ({100 * d.min():+.2f} … {100 * d.max():+.2f})" if name != "baseline" else "–"
        better = f"{int((d > 0).sum())}/{len(d)}" if cft else "–"
        counts = f"{sum(r['improved'] for r in rs)} / {sum(r['degraded'] for r in rs)}" if cft else "–"
        print(f"| {protocol} | {ratio:.0%} | {method} | {name} | {100 * mp.mean():.2f} ± {100 * mp.std():.2f} | "
              f"{delta} | {better} | {counts} |")
    print_em_summary(rows)
    print_calibration(rows)
    print(f"\n{time.perf_counter() - t0:.0f} s on {os.cpu_count()} CPUs; rows: {ORACLE!r} and {UPPER_BOUND!r} are "
          "upper bounds (λ tuned on test), never used to choose anything")


if __name__ == "__main__":
    main()
