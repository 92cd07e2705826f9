"""B4: feature-extraction throughput against a bare ``model(x)`` loop on the same inputs, and peak memory.

Both runs decode the same ``digits_mosaic`` images, preprocess them with the same image processor and the
same batch size; the bare loop only calls ``model(pixel_values)``, the extraction also captures the
classifier inputs, gathers them (accelerate) and writes them to the memory-mapped cache.

    python benchmarks/extract.py                 # ResNet-18-shaped model, 112 px, 768 images
    python benchmarks/extract.py --size 224 --images 2048
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_cft.data import load_partial_dataset  # noqa: E402
from hf_cft.features import extract_features  # noqa: E402
from hf_cft.head import CFTHead  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=768)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="hf_cft_b4_")
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
                         batch_size=args.batch_size, show_progress=False)

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
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"B4: ResNet-18-shaped model (random weights), {n} images at {args.size} px, batch {args.batch_size}, "
          f"best of {args.repeats}")
    print(f"  bare model(x) loop   {n / min(t_bare):8.1f} images/s")
    print(f"  extract_features     {n / min(t_ext):8.1f} images/s   ratio {min(t_bare) / min(t_ext):.2f}x")
    size = n * 512 * 4 / 2**20
    print(f"  peak RSS             {rss:8.0f} MB   (features on disk: {n} x 512 float32 = {size:.1f} MB)")


if __name__ == "__main__":
    main()
