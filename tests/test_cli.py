"""The hf-cft command: choices refused at parse time, a configuration with flags over it, shipped configurations by
name, evaluate and predict on a tiny model, and the trackers of --report_to read back from their own files."""

import json
import os
import subprocess
import sys
import typing

import numpy as np
import pytest
import torch
import transformers
from conftest import PROC, tiny_vit_head
from PIL import Image
from sklearn.metrics import average_precision_score

from hf_cft.cli import COMMANDS, main, resolve_config, run_command, shipped_configs
from hf_cft.data import BUILDERS, label_arrays, load_partial_dataset
from hf_cft.data.simulate import PROTOCOLS
from hf_cft.recipe import EngineArguments, RecipeArguments
from hf_cft.tracking import check_report_to, open_trackers
from hf_cft.training import TrainArguments
from hf_cft.training.arguments import Protocol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = [str(i) for i in range(10)]  # digits_mosaic's categories
DATA = ["--dataset_config", '{"n_train": 48, "n_test": 40}']
# torch elastic's record() (hf_cft.launch.entrypoint) cannot install its fault handler on pytest's captured output
pytestmark = pytest.mark.filterwarnings("ignore:Unable to enable fault handler")


def _cli(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "hf_cft.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def _refused(capsys, command, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        COMMANDS[command].parse(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


# -- parsing -------------------------------------------------------------------------------------------------------
def test_a_wrong_choice_is_refused_at_parse_time_with_the_choices(capsys):
    err = _refused(capsys, "cft", ["--bp_loss", "hinge"])
    assert "--bp_loss" in err and "invalid choice: 'hinge' (choose from 'asl', 'wmw', 'aucm')" in err
    err = _refused(capsys, "cft", ["--variant", "refit", "sgd"])
    from hf_cft.engine.registry import variant_choices

    assert "invalid choice: 'sgd' (choose from " + ", ".join(map(repr, variant_choices())) + ")" in err
    err = _refused(capsys, "train", ["--optimizer", "sgd"])
    assert "invalid choice: 'sgd' (choose from 'adam', 'adamw')" in err
    err = _refused(capsys, "train", ["--report_to", "tensorbord"])
    assert "'tensorboard', 'wandb', 'trackio', 'mlflow'" in err
    err = _refused(capsys, "cft", ["--dataset", "imagenet"])
    assert "'coco2014', 'digits_mosaic'" in err
    err = _refused(capsys, "cft", ["--selection", "split:test"])  # a dataclass's own check, before any load
    assert "selects on the evaluation split" in err


def test_every_fixed_set_of_values_is_typed_or_has_choices():
    def choices(cls, name):
        f = next(f for f in __import__("dataclasses").fields(cls) if f.name == name)
        hint = typing.get_type_hints(cls)[name]
        literal = [a for a in (hint, *typing.get_args(hint)) if typing.get_origin(a) is typing.Literal]
        return set(typing.get_args(literal[0])) if literal else set(f.metadata.get("choices") or ())

    assert choices(EngineArguments, "metric") == {"ap", "auroc"} == choices(TrainArguments, "metric")
    assert choices(EngineArguments, "selection_metric") == {"ap", "auroc"}
    assert choices(EngineArguments, "selection_rule") == {"crossfit", "strict"}
    assert choices(EngineArguments, "bp_loss") == {"asl", "wmw", "aucm"}
    assert choices(EngineArguments, "bp_optimizer") == {"adam", "gd"}
    assert choices(EngineArguments, "refit_toward") == {"zero", "trained"}
    assert choices(EngineArguments, "uncertain_policies") == {"u_ignore", "u_ones", "u_zeros"}
    assert choices(RecipeArguments, "feature_dtype") == {"float32", "float16"}
    assert choices(RecipeArguments, "library") == {"transformers", "timm"} == choices(TrainArguments, "model_type")
    assert choices(TrainArguments, "uncertain_policy") == {"u_ignore", "u_ones", "u_zeros", "u_lsr"}
    assert choices(TrainArguments, "cl_mode") == {"score", "positive"}
    assert set(typing.get_args(Protocol)) == {*PROTOCOLS, "salient"}  # the builders' protocols, none missing


def test_a_registry_name_added_later_is_accepted(monkeypatch):
    monkeypatch.setitem(BUILDERS, "my_folder", BUILDERS["partial_csv"])
    (args,) = COMMANDS["train"].parse(["--dataset", "my_folder"])
    assert args.dataset == "my_folder"


def test_a_config_file_with_flags_over_it(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("variant: [bp, ga]\nseed: 5\nmetric: auroc\nlr: 1e-3\nrefit_l2: 0.5\nknown_ratio: 0.3\n"
                   "report_to: none\n")
    recipe, engine = COMMANDS["cft"].parse([str(cfg), "--variant", "refit", "--seed", "3"])
    assert recipe.variant == ["refit"] and engine.seed == 3  # the flags win
    assert engine.metric == "auroc" and recipe.known_ratio == 0.3  # the file's values stay
    assert engine.lr == 1e-3 and isinstance(engine.lr, float)  # YAML reads 1e-3 as text: converted as the flag's
    assert engine.refit_l2 == [0.5] and recipe.report_to == []  # a single value of a list option
    assert engine.selection_rule == "crossfit" and recipe.dataset == "digits_mosaic"  # neither: the defaults
    recipe, engine = COMMANDS["cft"].parse(["--config", str(cfg), "--metric", "ap"])
    assert engine.metric == "ap" and engine.seed == 5 and recipe.variant == ["bp", "ga"]
    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps({"variant": ["refit"], "seed": 7}))
    assert COMMANDS["cft"].parse([str(as_json)])[1].seed == 7


def test_a_config_file_is_checked_like_the_flags(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("varient: refit\nseed: 1\nbatchsize: 8\n")
    err = _refused(capsys, "cft", [str(cfg)])
    assert "unknown option(s) batchsize, varient" in err and "variant" in err.split("whose options are")[1]
    cfg.write_text("bp_loss: hinge\n")
    assert "bp_loss: invalid choice: 'hinge' (choose from 'asl', 'wmw', 'aucm')" in _refused(capsys, "cft", [str(cfg)])
    cfg.write_text("seed: three\n")
    assert "seed: 'three' is not a valid value" in _refused(capsys, "cft", [str(cfg)])
    cfg.write_text("selection: split:test\neval_split: test\nallow_selection_on_eval: true\n")
    recipe, _ = COMMANDS["cft"].parse([str(cfg)])  # checked as a whole: the file's allow_... counts
    assert recipe.allow_selection_on_eval is True
    err = _refused(capsys, "cft", [str(cfg), "--config", str(cfg)])
    assert "give one configuration" in err


def test_shipped_configs_by_name(capsys):
    path = resolve_config("cft", "coco")
    assert path == os.path.join(ROOT, "hf_cft", "configs", "cft", "coco.yaml")
    assert list(shipped_configs("cft")) == ["coco"]
    recipe, engine = COMMANDS["cft"].parse(["--config", "coco", "--seed", "2"])
    assert recipe.dataset == "coco2014" and engine.selection_rule == "strict" and engine.seed == 2
    assert "coco_an_resnet101" in shipped_configs("train")
    (args,) = COMMANDS["train"].parse(["coco_an_resnet101"])
    assert args.model_name_or_path == "microsoft/resnet-101" and args.epochs == 60
    err = _refused(capsys, "cft", ["--config", "cocoa"])
    assert "--config 'cocoa': no such file" in err and "(shipped: coco)" in err


def test_help_lists_the_commands_and_the_choices(tmp_path):
    top = _cli("--help", cwd=tmp_path)
    assert top.returncode == 0
    assert all(name in top.stdout for name in ("train", "cft", "evaluate", "predict"))
    cft = _cli("cft", "--config", "coco", "--help", cwd=tmp_path)
    assert cft.returncode == 0, cft.stderr[-2000:]
    out = " ".join(cft.stdout.split())
    assert "--bp_loss {asl,wmw,aucm}" in out and "--selection_rule {crossfit,strict}" in out
    assert "(default: coco2014)" in out  # the configuration's values are the defaults shown
    assert "shipped one (coco)" in out
    bad = _cli("evaluate", "--metric", "map", cwd=tmp_path)
    assert bad.returncode == 2 and "invalid choice: 'map' (choose from 'ap', 'auroc')" in bad.stderr


# -- evaluate and predict on a tiny model ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "vit"
    head = tiny_vit_head(seed=1)
    head.image_processor = PROC
    head.save_pretrained(path, category_names=NAMES)
    return str(path)


def _logits(model_dir, images):
    model = transformers.AutoModelForImageClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(**PROC([im.convert("RGB") for im in images], return_tensors="pt")).logits.double().numpy()


def test_evaluate_scores_the_model_as_sklearn_does(tmp_path, model_dir, capsys):
    results = tmp_path / "r.json"
    assert main(["evaluate", "--model_name_or_path", model_dir, *DATA, "--cache_dir", str(tmp_path / "c")]) is None
    capsys.readouterr()
    out = run_command(["evaluate", "--model_name_or_path", model_dir, *DATA, "--cache_dir", str(tmp_path / "c"),
                "--results_file", str(results)])
    printed = capsys.readouterr().out
    assert f"| {model_dir} |" in printed and "| test | mAP | mAUC |" in printed
    ds = load_partial_dataset("digits_mosaic", n_train=48, n_test=40, known_ratio=0.1, protocol="uniform", seed=0)
    labels, mask = label_arrays(ds["test"])
    logits = _logits(model_dir, ds["test"]["image"])
    aps = [average_precision_score(labels[mask[:, c], c], logits[mask[:, c], c]) for c in range(10)
           if 0 < labels[mask[:, c], c].sum() < mask[:, c].sum()]
    assert out["table"][0]["map"] == pytest.approx(np.mean(aps), abs=1e-5)
    assert json.loads(results.read_text())["table"][0]["map"] == pytest.approx(np.mean(aps), abs=1e-5)


def test_predict_writes_a_json_line_per_image(tmp_path, model_dir, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos" / "sub"
    folder.mkdir(parents=True)
    images = [Image.fromarray(rng.integers(0, 255, (30, 20, 3), dtype=np.uint8)) for _ in range(3)]
    for i, im in enumerate(images[:2]):
        im.save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    single = tmp_path / "one.jpg"
    images[2].save(single, quality=100)
    main(["predict", "--model_name_or_path", model_dir, "--images", str(tmp_path / "photos"), str(single)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in lines] == [str(folder / "0.png"), str(folder / "1.png"), str(single)]
    expected = _logits(model_dir, [Image.open(line["image"]) for line in lines])
    for line, row in zip(lines, expected):
        assert list(line["scores"]) == NAMES and "labels" not in line  # no thresholds saved
        np.testing.assert_allclose([line["scores"][n] for n in NAMES], row, atol=1e-4)
        np.testing.assert_allclose([line["probabilities"][n] for n in NAMES], 1 / (1 + np.exp(-row)), atol=1e-5)


def test_predict_decides_labels_at_the_saved_thresholds(tmp_path, model_dir, capsys):
    with_thresholds = tmp_path / "thresholded"
    model = transformers.AutoModelForImageClassification.from_pretrained(model_dir)
    thresholds = [0.3, 0.7] * 5
    model.config.cft_thresholds = thresholds
    model.save_pretrained(with_thresholds)
    PROC.save_pretrained(with_thresholds)
    image = tmp_path / "x.png"
    Image.fromarray(np.full((24, 24, 3), 128, dtype=np.uint8)).save(image)
    out = tmp_path / "labels.jsonl"
    main(["predict", "--model_name_or_path", str(with_thresholds), "--images", str(image), "--output_file", str(out)])
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["labels"] == [n for n, t in zip(NAMES, thresholds) if line["probabilities"][n] >= t]
    model.config.cft_thresholds = [0.5] * 3
    model.save_pretrained(with_thresholds)
    with pytest.raises(ValueError, match="one finite threshold per category"):
        main(["predict", "--model_name_or_path", str(with_thresholds), "--images", str(image)])
    with pytest.raises(ValueError, match="no such file or folder"):
        main(["predict", "--model_name_or_path", model_dir, "--images", str(tmp_path / "missing.png")])


# -- trackers --------------------------------------------------------------------------------------------------------
def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_report_to_is_checked():
    assert check_report_to(["none"]) == [] and check_report_to(None) == [] and check_report_to("all") == ["all"]
    assert check_report_to(["tensorboard", "tensorboard"]) == ["tensorboard"]
    with pytest.raises(ValueError, match="do not combine it"):
        check_report_to(["none", "tensorboard"])
    with pytest.raises(ValueError, match="unknown tracker"):
        check_report_to(["tensorbord"])
    assert TrainArguments(with_tracking=True).report_to == ["tensorboard"]  # the deprecated alias


def test_tensorboard_gets_scalars_a_table_and_an_image(tmp_path):
    plot = tmp_path / "plot.png"
    Image.fromarray(np.zeros((8, 12, 3), dtype=np.uint8)).save(plot)
    trackers = open_trackers(["tensorboard"], "proj", str(tmp_path / "logs"), config={"lr": 0.1, "l2": [1, 2]})
    trackers.log({"val/map": 0.625, "val/skip": float("nan")}, step=3)
    trackers.log_table("per_category", ["category", "AP"], [["cat", 0.5], ["dog", float("nan")]])
    trackers.log_image("gains", str(plot))
    trackers.finish()
    acc = _events(tmp_path / "logs" / "proj")
    (event,) = acc.Scalars("val/map")
    assert event.step == 3 and event.value == pytest.approx(0.625)
    assert "val/skip" not in acc.Tags()["scalars"]
    assert acc.Images("gains")[0].width == 12
    text = acc.Tensors("per_category/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| cat | 0.5000 |" in text and "| dog | – |" in text


def test_the_recipe_logs_its_outcome(tmp_path, planted):
    from hf_cft import CFTConfig, fit_cft
    from hf_cft.constants import GAINS_PLOT_NAME
    from hf_cft.evaluation import score_rows
    from hf_cft.recipe.job import Job, Outcome
    from hf_cft.recipe.tracking import log_outcome

    x, y, m, w0, b0 = planted(n=400, d=8, c=3)
    result = fit_cft(x, y, m, w0, b0, CFTConfig(variant="refit", show_progress=False))
    scores = score_rows(x, {"baseline": (w0, b0), "refit": (result.weight, result.bias)}, y, np.ones_like(m))
    table = [{"method": "baseline", "map": 0.5, "mauc": 0.6, "improved": 0, "degraded": 0},
             {"method": "CFT-refit", "map": 0.75, "mauc": 0.7, "changed": 2, "improved": 2, "degraded": 0}]
    recipe = RecipeArguments(output_dir=str(tmp_path / "out"), report_to=["tensorboard"])
    os.makedirs(recipe.output_dir)
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(os.path.join(recipe.output_dir, GAINS_PLOT_NAME))
    job = Job(recipe, None, "m", None, ["a", "b", "c"], None, None)
    log_outcome(job, Outcome({"refit": result}, "refit", False, table, scores))
    acc = _events(tmp_path / "out" / "hf_cft_cft")
    assert acc.Scalars("test/CFT-refit/map_gain")[0].value == pytest.approx(0.25)
    assert acc.Scalars("test/baseline/mauc")[0].value == pytest.approx(0.6)
    assert acc.Images("test/gains")
    text = acc.Tensors("test/per_category/text_summary")[0].tensor_proto.string_val[0].decode()
    ap = scores["refit"].per_category("ap")
    assert f"| a | {scores['baseline'].per_category('ap')[0]:.4f} | {ap[0]:.4f} |" in text


TRACKIO = """
import json, sys
from hf_cft.tracking import open_trackers
trackers = open_trackers(["trackio"], "hf_cft_test", sys.argv[1], config={"lr": 0.1})
trackers.log({"val/map": 0.625}, step=1)
trackers.log({"val/map": 0.75}, step=2)
trackers.log_table("per_category", ["category", "AP"], [["cat", 0.5]], step=2)
name = trackers.trackers[0].run.name
trackers.finish()
from trackio.sqlite_storage import SQLiteStorage
print("LOGS " + json.dumps(SQLiteStorage.get_logs("hf_cft_test", name)))
"""


def test_trackio_logs_locally_offline(tmp_path):
    pytest.importorskip("trackio", reason="trackio is not installed (pip install 'hf_cft[trackio]')")
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", TRACKIO, str(tmp_path)], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (logs,) = [json.loads(line[5:]) for line in proc.stdout.splitlines() if line.startswith("LOGS ")]
    assert [(row["step"], row["val/map"]) for row in logs if "val/map" in row] == [(1, 0.625), (2, 0.75)]
    assert any("per_category" in row for row in logs)


def test_the_console_script_exits_0_after_a_command(tmp_path, model_dir):
    """The installed `hf-cft` runs `sys.exit(main())`: main returns None, so a command that worked exits 0."""
    image = tmp_path / "x.png"
    Image.fromarray(np.full((24, 24, 3), 100, dtype=np.uint8)).save(image)
    script = "import sys; from hf_cft.cli import main; sys.exit(main())"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", script, "predict", "--model_name_or_path", model_dir, "--images",
                           str(image)], capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["image"] == str(image)
