"""Train a baseline (Assume Negative, ignore, LL-R, Selective, Curriculum Labeling) on partial labels.

    accelerate launch recipes/train.py                              # small model, digits_mosaic, 10% known, AN
    accelerate launch recipes/train.py --method ll_r --epochs 20
    accelerate launch recipes/train.py recipes/configs/coco_an_resnet101.yaml
    accelerate launch --multi_gpu --num_processes 2 recipes/train.py   # two processes (CPU: gloo)

Every option is a field of hf_cft.training.TrainArguments (``--help`` lists them).
"""

import logging
import os
import sys

from transformers import HfArgumentParser

from hf_cft.launch import entrypoint
from hf_cft.training import TrainArguments, train


def parse_args(argv=None) -> TrainArguments:
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(TrainArguments)
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        (args,) = parser.parse_yaml_file(os.path.abspath(argv[0]))
    elif len(argv) == 1 and argv[0].endswith(".json"):
        (args,) = parser.parse_json_file(os.path.abspath(argv[0]))
    else:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    return args


@entrypoint
def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hf_cft").setLevel(logging.INFO)
    train(parse_args())


if __name__ == "__main__":
    main()
