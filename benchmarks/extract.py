"""B4: feature-extraction throughput against a bare ``model(x)`` loop on the same inputs, and peak memory;
B4w: images/s of extraction with 0 loader workers and with the default (the cores available, at most 8), on
the embedded data and on a folder of JPEGs at COCO size (640×480), with identical features.

B4: both runs decode the same ``digits_mosaic`` images, preprocess them with the same image processor and the
same batch size; the bare loop only calls ``model(pixel_values)``, the extraction also captures the
classifier inputs, gathers them (accelerate) and writes them to the memory-mapped cache.

B4w: a tiny ResNet (built from a config, random weights) so that reading the images is what costs; the JPEG
folder (random smooth content plus noise, ~640×480, written once to a temporary folder) is read through the
``partial_csv`` builder, as a user's folder would be. Each figure is the best of ``--repeats`` extractions into
a fresh cache; ``sha`` is a hash of the features, equal across worker counts (and across code versions).

    python benchmarks/extract.py                 # B4 and B4w
    python benchmarks/extract.py --what workers --jpegs 300
    python benchmarks/extract.py --what bare --size 224 --images 2048
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import resource
import sys
import tempfile
import time

import numpy as np
import torch
import transformers

sys.path.insert(0, os.environ.get("HF_CFT_CODE") or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_cft.data import load_partial_dataset  # noqa: E402
from hf_cft.features import extract_features  # noqa: E402
from hf_cft.head import CFTHead  # noqa: E402


def bare_vs_extract(args, work: str) -> None:
    """B4: the extraction against a bare ``model(x)`` loop."""
    ds = load_partial_dataset("digits_mosaic", cache_dir=os.path.join(work, "data"), n_train=args.images, n_test=1)
    train = ds["train"]
    cfg = transformers.ResNetConfig(embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2],
                                    layer_type="basic", num_labels=10)
    torch.manual_seed(0)
    model = transformers.ResNetForImageClassification(cfg).eval()
    proc = transformers.ViTImageProcessor(size={"height": args.size, "width": args.size})
    head = CFTHead(model)

    def collate(rows):
        return proc([r["image"].convert("RGB") for r in rows], return_tensors="pt")["pixel_values"]

    def bare():
        loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, collate_fn=collate)
        with torch.no_grad():
            for x in loader:
                model(x)

    def extract(i):
        extract_features(head, train, os.path.join(work, f"cache{i}"), image_processor=proc,
                         batch_size=args.batch_size, num_workers=0, show_progress=False)

    bare()  # warm-up
    t_bare, t_ext = [], []
    for i in range(args.repeats):  # interleaved, best of each
        t = time.perf_counter()
        bare()
        t_bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        extract(i)
        t_ext.append(time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = args.images
    print(f"B4: ResNet-18-shaped model (random weights), {n} images at {args.size} px, batch {args.batch_size}, "
          f"best of {args.repeats}, decoding in the main process")
    print(f"  bare model(x) loop   {n / min(t_bare):8.1f} images/s")
    print(f"  extract_features     {n / min(t_ext):8.1f} images/s   ratio {min(t_bare) / min(t_ext):.2f}x")
    size = n * 512 * 4 / 2**20
    print(f"  peak RSS             {rss:8.0f} MB   (features on disk: {n} x 512 float32 = {size:.1f} MB)")


def jpeg_folder(root: str, n: int, size=(640, 480)) -> str:
    """``n`` JPEGs of ``size`` (smooth random colours plus noise, like photos in file size) and a partial_csv."""
    from PIL import Image

    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    rng = np.random.default_rng(0)
    with open(os.path.join(root, "train.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "a", "b"])
        for i in range(n):
            small = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
            pixels = np.asarray(small, dtype=np.int16) + rng.normal(0, 6, (size[1], size[0], 3)).astype(np.int16)
            rel = f"images/{i:05d}.jpg"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(os.path.join(root, rel), quality=90)
            w.writerow([rel, int(rng.integers(2)), ""])
    return root


def tiny_head() -> CFTHead:
    cfg = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic",
                                    num_labels=2)
    torch.manual_seed(0)
    return CFTHead(transformers.ResNetForImageClassification(cfg).eval())


def workers_lines(args, work: str) -> None:
    """B4w: images/s with 0 workers and with the default, on digits_mosaic and on the COCO-size JPEG folder."""
    try:
        from hf_cft.data.loading import default_num_workers

        default = default_num_workers()
    except ImportError:  # a version of the code without a workers default: its default is 0
        default = 0
    digits = load_partial_dataset("digits_mosaic", cache_dir=os.path.join(work, "d"), n_train=args.images,
                                  n_test=1)["train"]
    folder = os.path.join(work, f"jpegs{args.jpegs}")
    if not os.path.exists(os.path.join(folder, "train.csv")):
        jpeg_folder(folder, args.jpegs)
    jpegs = load_partial_dataset("partial_csv", data_dir=folder, cache_dir=os.path.join(work, "j"))["train"]
    head = tiny_head()
    proc = transformers.ViTImageProcessor(size={"height": args.size, "width": args.size})
    print(f"B4w: tiny ResNet (random weights) at {args.size} px, batch {args.batch_size}, best of {args.repeats}; "
          f"default workers here: {default}; load average before: {_load()}")
    extract_features(head, digits.select(range(64)), os.path.join(work, "warm"), image_processor=proc,
                     batch_size=args.batch_size, num_workers=0, show_progress=False)  # first-call costs
    for name, split in ((f"digits_mosaic ({len(digits)} PNG mosaics)", digits),
                        (f"JPEG folder ({len(jpegs)} x 640x480, partial_csv)", jpegs)):
        modes = {"0 workers": {"num_workers": 0}, f"default ({default})": {}}
        best, shas = dict.fromkeys(modes, float("inf")), {}
        for _ in range(args.repeats):  # interleaved, best of each
            for label, kw in modes.items():
                t = time.perf_counter()
                cache = extract_features(head, split, tempfile.mkdtemp(dir=work), image_processor=proc,
                                         batch_size=args.batch_size, show_progress=False, **kw)
                best[label] = min(best[label], time.perf_counter() - t)
                shas[label] = hashlib.sha256(np.ascontiguousarray(cache.features).tobytes()).hexdigest()[:12]
        (l0, t0), (l1, t1) = best.items()
        same = "identical" if len(set(shas.values())) == 1 else "DIFFERENT"
        print(f"  {name:<40} {l0} {len(split) / t0:7.1f} images/s | {l1} {len(split) / t1:7.1f} images/s | "
              f"{t0 / t1:.2f}x | features {same} (sha {shas[l0]})", flush=True)
    print(f"  load average after: {_load()}")


def _load() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", choices=("all", "bare", "workers"), default="all")
    ap.add_argument("--images", type=int, default=768, help="digits_mosaic images")
    ap.add_argument("--jpegs", type=int, default=300, help="640x480 JPEGs in the folder (B4w)")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default=None, help="folder for the data and caches (default: a new temporary one)")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="hf_cft_b4_")
    print(f"machine: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} "
          f"cores available, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    if args.what in ("all", "bare"):
        bare_vs_extract(args, work)
    if args.what in ("all", "workers"):
        workers_lines(args, work)


if __name__ == "__main__":
    main()
