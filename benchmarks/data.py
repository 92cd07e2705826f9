"""Builder cost on an OpenImages-shaped synthetic annotation set: time and peak memory.

Writes the V3 CSV layout (classes-trainable.txt, class-descriptions.csv, train/annotations-human.csv,
train/images.csv) for N images × C classes with a given known share (default 0.1%: 5 human labels per image
at C = 5,000), every image a symbolic link to one tiny JPEG, then builds it with the openimages_v3 builder.

    python benchmarks/data.py                       # 50,000 images × 5,000 classes
    python benchmarks/data.py --images 200000
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_cft.data import label_arrays, load_partial_dataset, partial_info  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--classes", type=int, default=5_000)
    ap.add_argument("--known", type=float, default=0.001)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="hf_cft_oi_bench_")
    root = os.path.join(work, "oi")
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    os.makedirs(os.path.join(root, "train"))
    os.makedirs(os.path.join(root, "images", "train"))
    mids = [f"/m/{i:06x}" for i in range(args.classes)]
    with open(os.path.join(root, "classes-trainable.txt"), "w") as f:
        f.write("\n".join(mids) + "\n")
    with open(os.path.join(root, "class-descriptions.csv"), "w", newline="") as f:
        csv.writer(f).writerows([m, f"class {i}"] for i, m in enumerate(mids))
    per_image = max(1, int(round(args.known * args.classes)))
    src = os.path.join(work, "one.jpg")
    Image.new("RGB", (4, 4)).save(src)
    with open(os.path.join(root, "train", "annotations-human.csv"), "w", newline="") as fa, \
            open(os.path.join(root, "train", "images.csv"), "w", newline="") as fi:
        wa, wi = csv.writer(fa), csv.writer(fi)
        wa.writerow(["ImageID", "Source", "LabelName", "Confidence"])
        wi.writerow(["ImageID", "Subset", "OriginalURL"])
        for i in range(args.images):
            image = f"{i:016x}"
            wi.writerow([image, "train", ""])
            for k in rng.choice(args.classes, size=per_image, replace=False):
                wa.writerow([image, "verification", mids[k], int(rng.random() < 0.3)])
            os.symlink(src, os.path.join(root, "images", "train", image + ".jpg"))
    t_write = time.perf_counter() - t
    rss0 = peak_rss_mb()
    t = time.perf_counter()
    ds = load_partial_dataset("openimages_v3", data_dir=root, cache_dir=os.path.join(work, "cache"))
    t_build = time.perf_counter() - t
    rss1 = peak_rss_mb()
    info = partial_info(ds["train"])
    t = time.perf_counter()
    _, mask = label_arrays(ds["train"].select(range(min(10_000, ds["train"].num_rows))))
    t_read = time.perf_counter() - t
    size = sum(os.path.getsize(f["filename"]) for f in ds["train"].cache_files) / 2**20
    print(f"machine: {os.cpu_count()} CPUs")
    print(f"openimages_v3 synthetic: {args.images} images x {args.classes} classes, {per_image} human labels/image "
          f"({info['achieved_known_ratio']:.3%} known)")
    print(f"  write CSVs + links   {t_write:8.1f} s")
    print(f"  build (generate)     {t_build:8.1f} s   {args.images / t_build:8.0f} images/s")
    print(f"  peak RSS             {rss1:8.0f} MB   (before the build {rss0:.0f} MB; a dense images x classes "
          f"int8 matrix would be {args.images * args.classes / 2**20:.0f} MB)")
    print(f"  arrow on disk        {size:8.0f} MB")
    print(f"  read 10k label rows  {t_read:8.2f} s   ({mask.shape})")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
