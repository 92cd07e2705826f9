"""recipes/cft.py (hf-cft cft) end to end: errors, two processes equal one, a killed run resumes to the same bytes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import transformers
from safetensors.torch import load_file

from hf_cft.recipe import ORACLE, THRESHOLD_BOUND, UPPER_BOUND

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "cft.py")
DATA = ["--dataset_config", '{"n_train": 384, "n_test": 128}', "--batch_size", "64"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "vit"
    names = [str(i) for i in range(10)]
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=24, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, num_labels=10,
                                 id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    transformers.ViTForImageClassification(cfg).save_pretrained(path)
    transformers.ViTImageProcessor(size={"height": 24, "width": 24}).save_pretrained(path)
    return str(path)


def _cmd(args, launcher=("--num_processes", "1"), script=(RECIPE,)):
    return [sys.executable, "-m", "accelerate.commands.launch", *launcher, *script, *args]


def _run(args, cwd, launcher=("--num_processes", "1"), script=(RECIPE,)):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}  # for -m hf_cft.cli
    proc = subprocess.run(_cmd(args, launcher, script), capture_output=True, text=True, cwd=str(cwd), timeout=900,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _outputs(folder):
    with open(os.path.join(folder, "cft_report.json"), "rb") as f:
        report = f.read()
    return report, load_file(os.path.join(folder, "model.safetensors"))


def test_errors_are_clear(tmp_path, model_dir):
    from hf_cft.recipe import RecipeArguments

    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        RecipeArguments(dataset="imagenet")
    with pytest.raises(ValueError, match="selects on the evaluation split"):
        RecipeArguments(selection="split:test", eval_split="test")
    RecipeArguments(selection="split:test", eval_split="test", allow_selection_on_eval=True)
    with pytest.raises(ValueError, match="--variant"):
        RecipeArguments(variant=["sgd"])
    other = tmp_path / "other"
    m = transformers.ViTForImageClassification.from_pretrained(model_dir)
    m.config.id2label = {i: f"class {i}" for i in range(10)}
    m.save_pretrained(other)
    proc = subprocess.run(_cmd(["--model_name_or_path", str(other), *DATA, "--output_dir", str(tmp_path / "o")]),
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=600)
    assert proc.returncode != 0 and "0: model 'class 0' vs dataset '0'" in proc.stderr


def test_two_processes_equal_one_and_selection_on_eval_is_stated(tmp_path, model_dir):
    args = ["--model_name_or_path", model_dir, *DATA, "--variant", "ga", "refit", "auto", "--generations", "20",
            "--population_size", "8", "--mutation_range", "0.05", "--block_memory_mb", "0.05"]
    _run([*args, "--output_dir", str(tmp_path / "one"), "--cache_dir", str(tmp_path / "c1")], tmp_path)
    _run([*args, "--output_dir", str(tmp_path / "two"), "--cache_dir", str(tmp_path / "c2")], tmp_path,
         launcher=("--multi_gpu", "--num_processes", "2"))
    r1, w1 = _outputs(tmp_path / "one")
    r2, w2 = _outputs(tmp_path / "two")
    assert r1 == r2
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    results = json.loads((tmp_path / "one" / "cft_results.json").read_text())
    assert [row["method"] for row in results["table"] if not row.get("reporting_only")] == [
        "baseline", "CFT-ga", "CFT-refit", "CFT-auto"]
    headroom = [row for row in results["table"] if row.get("reporting_only")]
    assert [row["method"] for row in headroom] == [  # the labels of digits are simulated
        "CFT-auto uncalibrated, at 0.5", UPPER_BOUND, ORACLE, THRESHOLD_BOUND]
    assert all(0 < row["map"] <= 1 for row in headroom if row["method"] in (UPPER_BOUND, ORACLE))
    assert {"README.md", "cft_gains.png", "cft_config.json", "preprocessor_config.json", "cft_calibration.png",
            "per_category.csv"} <= set(os.listdir(tmp_path / "one"))
    # the card's model-index holds this model's own results: the kept row's figures of cft_results.json
    from huggingface_hub import ModelCard

    kept = next(row for row in results["table"] if row["method"] == "CFT-auto")
    index = {m["type"]: m["value"] for m in ModelCard.load(tmp_path / "one" / "README.md").data.to_dict()[
        "model-index"][0]["results"][0]["metrics"]}
    assert index == {k: pytest.approx(round(100 * kept[k], 4)) for k in ("map", "mauc", "f1_macro", "ece", "brier")}
    card = (tmp_path / "one" / "README.md").read_text()
    assert "![Per-category gains](cft_gains.png)" in card and "(cft_calibration.png)" in card
    assert "model.config.cft_thresholds" in card
    thresholds = json.loads((tmp_path / "one" / "config.json").read_text())["cft_thresholds"]
    assert len(thresholds) == 10 and all(0 < t < 1 for t in thresholds)
    _run(["--model_name_or_path", model_dir, *DATA, "--variant", "refit", "--selection", "split:test",
          "--allow_selection_on_eval", "--output_dir", str(tmp_path / "eval"), "--cache_dir", str(tmp_path / "c1"),
          "--license", "mit"], tmp_path)
    card = (tmp_path / "eval" / "README.md").read_text()
    assert "\nlicense: mit\n" in card
    report = json.loads((tmp_path / "eval" / "cft_report.json").read_text())
    assert "SELECTION WAS DONE ON THE EVALUATION SPLIT" in report["selection"]
    assert "Selection was done on the evaluation split" in card


def test_killed_run_resumes_to_identical_bytes(tmp_path, model_dir):
    args = ["--model_name_or_path", model_dir, *DATA, "--variant", "ga", "--generations", "300", "--patience",
            "0", "--population_size", "16", "--block_memory_mb", "0.05"]
    _run([*args, "--output_dir", str(tmp_path / "full"), "--cache_dir", str(tmp_path / "cf")], tmp_path)
    blocks = tmp_path / "ck" / "blocks"
    proc = subprocess.Popen(_cmd([*args, "--output_dir", str(tmp_path / "cut"), "--cache_dir", str(tmp_path / "ck")]),
                            cwd=str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not (blocks.exists() and any(blocks.glob("*.safetensors"))):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # during the engine stage, after its first block
    proc.wait()
    done = list(blocks.glob("*.safetensors"))
    assert done and not (tmp_path / "cut" / "cft_report.json").exists()
    n_blocks = len(json.loads((tmp_path / "full" / "cft_report.json").read_text())["categories"])
    _run([*args, "--output_dir", str(tmp_path / "cut"), "--cache_dir", str(tmp_path / "ck")], tmp_path)
    r_full, w_full = _outputs(tmp_path / "full")
    r_cut, w_cut = _outputs(tmp_path / "cut")
    assert r_full == r_cut  # byte-identical report
    assert all(torch.equal(w_full[k], w_cut[k]) for k in w_full)
    assert n_blocks == 10


def test_auroc_end_to_end(tmp_path, model_dir):
    """--metric auroc (the CheXpert setting): selection, report, card and plot all on AUROC; run as
    `accelerate launch -m hf_cft.cli cft CONFIG --flags`, the file's values under the flags."""
    config = tmp_path / "run.yaml"
    config.write_text(f"model_name_or_path: {model_dir}\nmetric: auroc\nvariant: [bp, ga]\nseed: 4\n")
    proc = _run([str(config), *DATA, "--variant", "refit", "--output_dir", str(tmp_path / "o"), "--cache_dir",
                 str(tmp_path / "c")], tmp_path, script=("-m", "hf_cft.cli", "cft"))
    assert "| CFT-refit (kept) |" in proc.stdout  # the flag's variant, not the file's
    out = tmp_path / "o"
    report = json.loads((out / "cft_report.json").read_text())
    assert report["config"]["metric"] == "auroc" and "AUROC" in report["selection"]
    assert report["config"]["seed"] == 4  # the resolved configuration is saved with the outputs
    card = (out / "README.md").read_text()
    assert "mAUC" in card and (out / "cft_gains.png").stat().st_size > 1000


FAIL_ON_RANK_1 = """
import time
from accelerate import Accelerator
from hf_cft.launch import entrypoint

@entrypoint
def main():
    accelerator = Accelerator(cpu=True)
    if accelerator.process_index == 1:
        time.sleep(1)
        raise KeyError("induced failure on rank 1")
    accelerator.wait_for_everyone()  # rank 0 waits at a collective for a peer that never comes
    time.sleep(300)

main()
"""


def test_a_failure_on_one_process_ends_all_with_its_message(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(FAIL_ON_RANK_1)
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           str(script)], capture_output=True, text=True, cwd=str(tmp_path), timeout=240)
    assert proc.returncode != 0
    assert time.time() - start < 60
    out = proc.stdout + proc.stderr
    assert "process 1 of 2 failed: KeyError: 'induced failure on rank 1'" in out  # the original message, once
    if "Root Cause" in out:  # torch elastic's summary, when the launcher prints one, names the same rank
        assert "rank      : 1" in out[out.index("Root Cause"):]


def test_every_shipped_config_parses_with_its_recipe(tmp_path):
    """hf_cft/configs/<command>/*.yaml: every key is an argument of its command and every value passes its checks."""
    import glob

    from transformers import HfArgumentParser

    from hf_cft import CFTConfig
    from hf_cft.recipe import EngineArguments, RecipeArguments
    from hf_cft.recipe.arguments import decision_config, engine_settings
    from hf_cft.training import TrainArguments

    root = os.path.join(ROOT, "hf_cft", "configs")
    cft, train = (sorted(glob.glob(os.path.join(root, command, "*.yaml"))) for command in ("cft", "train"))
    assert len(cft) >= 1 and len(train) >= 7
    for path in cft:
        recipe, engine = HfArgumentParser((RecipeArguments, EngineArguments)).parse_yaml_file(path)
        CFTConfig(variant="bp", **engine_settings(engine))
        decision_config(engine)
    for path in train:
        (args,) = HfArgumentParser((TrainArguments,)).parse_yaml_file(path)
        assert args.learning_rate <= 1e-3, f"{path}: the demo's learning rate, not a setup's"
