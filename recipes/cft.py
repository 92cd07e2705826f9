"""Category-wise fine-tuning, end to end.

    accelerate launch recipes/cft.py        # offline: AN baseline on digits_mosaic (10% known) → CFT → report
    accelerate launch recipes/cft.py --model_name_or_path you/resnet101-coco --dataset coco2014 \\
        --data_dir ~/data/coco --variant refit ga auto --selection holdout:0.15 --eval_split validation
    accelerate launch recipes/cft.py recipes/configs/cft_coco.yaml        # the paper's COCO setting
    accelerate launch --multi_gpu --num_processes 2 recipes/cft.py     # categories sharded across processes

Options: hf_cft.recipe.RecipeArguments and every CFTConfig field (``--help`` lists them).
"""

import logging
import os
import sys

from accelerate import PartialState
from transformers import HfArgumentParser

from hf_cft.launch import entrypoint
from hf_cft.recipe import EngineArguments, RecipeArguments, format_table, run


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser((RecipeArguments, EngineArguments))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(os.path.abspath(argv[0]))
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


@entrypoint
def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hf_cft").setLevel(logging.INFO)
    logging.getLogger("hf_cft.recipe").setLevel(logging.WARNING)  # the table is printed below
    recipe, engine = parse_args()
    result = run(recipe, engine)
    if PartialState().is_main_process:
        print("\n" + format_table(result["table"], result["eval_split"], result["kept"]))


if __name__ == "__main__":
    main()
