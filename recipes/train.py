"""Train a baseline (Assume Negative, ignore, LL-R, Selective, Curriculum Labeling) on partial labels:
``hf-cft train`` (hf_cft.cli) as a script, for ``accelerate launch``.

    accelerate launch recipes/train.py                              # small model, digits_mosaic, 10% known, AN
    accelerate launch recipes/train.py --method ll_r --epochs 20
    accelerate launch recipes/train.py --config coco_an_resnet101   # a shipped configuration (GPU)
    accelerate launch --multi_gpu --num_processes 2 recipes/train.py   # two processes (CPU: gloo)

The same as ``hf-cft train ...`` and ``accelerate launch -m hf_cft.cli train ...``; ``--help`` lists the options.
"""

import sys

from hf_cft.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
