"""Category-wise fine-tuning, end to end: ``hf-cft cft`` (hf_cft.cli) as a script, for ``accelerate launch``.

    accelerate launch recipes/cft.py        # offline: AN baseline on digits_mosaic (10% known) → CFT → report
    accelerate launch recipes/cft.py --model_name_or_path you/resnet101-coco --dataset coco2014 \\
        --data_dir ~/data/coco --variant refit ga auto --selection holdout:0.15 --eval_split validation
    accelerate launch recipes/cft.py --config coco --seed 3      # the paper's COCO setting, a flag over it
    accelerate launch --multi_gpu --num_processes 2 recipes/cft.py     # categories sharded across processes

The same as ``hf-cft cft ...`` and ``accelerate launch -m hf_cft.cli cft ...``; ``--help`` lists the options.
"""

import sys

from hf_cft.cli import main

if __name__ == "__main__":
    main(["cft", *sys.argv[1:]])
