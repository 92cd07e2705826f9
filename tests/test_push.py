"""push_to_hub end to end against a local Hub-compatible server (no network)."""

import json
import os
import subprocess
import sys

from hub_server import HubServer


def _hub_env(hub: HubServer, tmp_path, logged_out: bool = False) -> dict:
    """A subprocess environment that talks to the local Hub server only (``logged_out``: no HF_TOKEN)."""
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    if logged_out:
        env.pop("HF_TOKEN", None)
    return env


def _run(hub: HubServer, script: str, tmp_path, logged_out: bool = False) -> tuple[dict, str]:
    """Run ``script`` in a subprocess against the local Hub server: the JSON of its last printed line, and
    everything it printed (stderr, then stdout)."""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=_hub_env(hub, tmp_path, logged_out), cwd=str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr + proc.stdout


# a tiny ViT classifier in a CFTHead, the start of the scripts below
TINY_VIT = r'''
import json, numpy as np, torch, transformers
from hf_cft import CFTConfig, fit_cft
from hf_cft.head import CFTHead
torch.manual_seed(0)
cfg = transformers.ViTConfig(image_size=24, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32, num_labels=3, id2label={0: "a", 1: "b", 2: "c"},
                             label2id={"a": 0, "b": 1, "c": 2})
head = CFTHead(transformers.ViTForImageClassification(cfg).eval())
'''

SCRIPT = TINY_VIT + r'''
from huggingface_hub import HfApi
token = "hf_secret_token_123"
rng = np.random.default_rng(0)
z = rng.normal(size=(300, 16)).astype(np.float32)
y = (rng.random((300, 3)) < 0.4).astype(np.int8)
m = rng.random((300, 3)) < 0.7
head.apply(fit_cft(z, y, m, head.weight, head.bias, CFTConfig(variant="refit", show_progress=False)))
api = HfApi(token=token)
api.create_repo("user/cft-test", exist_ok=True)
api.upload_file(path_or_fileobj=b"---\nlicense: mit\ntags:\n- mine\n---\n# My model\n\nNotes from the author.\n",
                path_in_repo="README.md", repo_id="user/cft-test")
url = head.push_to_hub("user/cft-test", token=token, dataset_name="digits_mosaic")
url = head.push_to_hub("user/cft-test", token=token, dataset_name="digits_mosaic")  # again: section replaced
x = torch.randn(2, 3, 24, 24)
with torch.no_grad():
    expected = head.model(x).logits
back = transformers.AutoModelForImageClassification.from_pretrained("user/cft-test").eval()
with torch.no_grad():
    got = back(x).logits
from huggingface_hub import hf_hub_download
readme = open(hf_hub_download("user/cft-test", "README.md"), encoding="utf-8").read()
print(json.dumps({"max_diff": float((got - expected).abs().max()), "readme": readme, "url": url,
                  "problem_type": back.config.problem_type}))
'''


def test_push_merge_and_reload(tmp_path):
    with HubServer() as hub:
        out, printed = _run(hub, SCRIPT, tmp_path, logged_out=True)
        files = hub.state.repos["user/cft-test"]
    assert out["max_diff"] < 1e-5 and out["problem_type"] == "multi_label_classification"
    assert {"config.json", "model.safetensors", "cft_config.json", "cft_report.json", "cft_gains.png",
            "README.md"} <= set(files)
    readme = out["readme"]
    assert "Notes from the author." in readme  # the existing card is merged, not destroyed
    assert readme.count("<!-- hf_cft:start -->") == 1  # pushing again replaces our section
    assert "license: mit" in readme and "- mine" in readme and "- hf_cft" in readme
    assert 'model="user/cft-test"' in readme  # the usage snippet names the real repo
    assert len([c for c in hub.state.log if "/commit/" in c]) == 3  # one commit per push (plus the user's)
    leaked = [p for p, _, fs in os.walk(tmp_path) for f in fs
              if b"hf_secret_token_123" in open(os.path.join(p, f), "rb").read()]
    assert not leaked and "hf_secret_token_123" not in printed


TIMM_SCRIPT = r'''
import json, tempfile, timm, torch
from huggingface_hub import HfApi
from hf_cft.head import CFTHead
torch.manual_seed(0)
model = timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()
src = tempfile.mkdtemp()
timm.models.save_for_hf(model, src, safe_serialization=True)  # as timm's push_to_hf_hub publishes a fine-tuned model
api = HfApi(token="hf_x")
api.create_repo("user/timm-tiny", exist_ok=True)
api.upload_folder(repo_id="user/timm-tiny", folder_path=src)
head = CFTHead.from_pretrained("user/timm-tiny")  # no library given: read from the repo's config.json
x = torch.randn(1, 3, 40, 40)
with torch.no_grad():
    diff = float((head.model(x) - model(x)).abs().max())
pinned = CFTHead.from_pretrained("user/timm-tiny", revision="main", token="hf_x")  # timm, through a snapshot
with torch.no_grad():
    pinned_diff = float((pinned.model(x) - model(x)).abs().max())
print(json.dumps({"library": head.library, "paths": list(head.spec.paths), "diff": diff,
                  "pinned": [pinned.library, pinned_diff]}))
'''


def test_a_timm_model_on_the_hub_loads_as_timm(tmp_path):
    with HubServer() as hub:
        out, _ = _run(hub, TIMM_SCRIPT, tmp_path)
    assert out["library"] == "timm" and out["paths"] == ["fc"] and out["diff"] < 1e-5
    assert out["pinned"][0] == "timm" and out["pinned"][1] < 1e-5


PR_SCRIPT = TINY_VIT + r'''
token = "hf_secret_token_456"
head.image_processor = transformers.ViTImageProcessor(size={"height": 24, "width": 24})
w0, b0 = head.weight.clone(), head.bias.clone()
results = []
for seed in (0, 1):  # two calibrations of the same model: the first on main, the second proposed in a PR
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(300, 16)).astype(np.float32)
    y = (z @ rng.normal(size=(16, 3)) > 0).astype(np.int8)
    m = rng.random((300, 3)) < 0.7
    results.append(fit_cft(z, y, m, w0, b0, CFTConfig(variant="refit", seed=seed, show_progress=False)))
head.apply(results[0])
main_url = head.push_to_hub("user/cft-pr", token=token)
head.apply(results[1])
pr_url = head.push_to_hub("user/cft-pr", token=token, create_pr=True, commit_message="CFT: please review")
pr = CFTHead.from_pretrained("user/cft-pr", revision="refs/pr/1", token=token)
main = CFTHead.from_pretrained("user/cft-pr", token=token)
print(json.dumps({
    "main_url": main_url, "pr_url": pr_url,
    "pr_report": pr.cft_report.to_dict() == results[1].to_dict(),
    "main_report": main.cft_report.to_dict() == results[0].to_dict(),
    "pr_rows": bool(torch.allclose(pr.weight, results[1].weight, atol=1e-6)),
    "main_rows": bool(torch.allclose(main.weight, results[0].weight, atol=1e-6)),
    "differ": results[0].to_dict() != results[1].to_dict(),
}))
'''


def test_push_with_create_pr_leaves_main_and_load_reads_the_revision(tmp_path):
    """The local server keeps refs: a create_pr push opens refs/pr/1 and main stays as it was; loading with
    revision= and token= reads every file (the CFT JSON files included) at that revision, with the token."""
    with HubServer() as hub:
        out, _ = _run(hub, PR_SCRIPT, tmp_path, logged_out=True)
        main, refs, commits = hub.state.repos["user/cft-pr"], hub.state.refs["user/cft-pr"], hub.state.commits
        auth = list(hub.state.auth)
        pr_commit = hub.state.ref_commits[("user/cft-pr", "refs/pr/1")]
    assert out["differ"] and out["pr_report"] and out["main_report"] and out["pr_rows"] and out["main_rows"]
    assert out["pr_url"].endswith("/user/cft-pr/discussions/1") and "/commit/" in out["main_url"]
    assert list(refs) == ["refs/pr/1"] and len(commits["user/cft-pr"]) == 1  # main got the first push only
    assert main["cft_report.json"] != refs["refs/pr/1"]["cft_report.json"]
    seeds = [json.loads(files["cft_config.json"])["seed"] for files in (main, refs["refs/pr/1"])]
    assert seeds == [0, 1]
    at_pr = {req.rsplit("/", 1)[-1] for req, _ in auth if f"/resolve/{pr_commit}/" in req or "/refs/pr/1/" in req}
    assert {"config.json", "model.safetensors", "cft_config.json", "cft_report.json",
            "preprocessor_config.json"} <= at_pr  # every file of the PR load read at its revision
    assert {header for _, header in auth} == {"Bearer hf_secret_token_456"}  # every download with the token


class _Recorder:
    def __init__(self):
        self.pushed = None

    def apply(self, result):
        return self

    def save_pretrained(self, *args, **kwargs):
        return "out"

    def push_to_hub(self, repo_id, **kwargs):
        self.pushed = (repo_id, kwargs)


class _Scores:
    def to_dict(self):
        return {"map": 0.5, "mauc": 0.5}


def test_the_recipe_passes_hub_revision_and_create_pr_to_the_push(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from transformers import HfArgumentParser

    from hf_cft.recipe.arguments import RecipeArguments
    from hf_cft.recipe.job import Job, Outcome
    from hf_cft.recipe.report import save_outputs

    (recipe,) = HfArgumentParser(RecipeArguments).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path / "out"), "--push_to_hub", "--hub_model_id", "me/m", "--hub_revision", "dev",
         "--hub_create_pr"], look_for_args_file=False)
    head = _Recorder()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # "m" is no folder: its license is not asked of the Hub
    job = Job(recipe=recipe, accelerator=type("A", (), {"print": staticmethod(lambda *a: None)})(),
              model_path="m", ds=None, names=["a"], head=head, features_of=None)
    outcome = Outcome(results={"refit": None}, kept="refit", selection_on_eval=False, table=[],
                      scores={"baseline": _Scores(), "refit": _Scores()})
    save_outputs(job, outcome)
    assert head.pushed[0] == "me/m"
    assert head.pushed[1]["revision"] == "dev" and head.pushed[1]["create_pr"] is True
    (plain,) = HfArgumentParser(RecipeArguments).parse_args_into_dataclasses(["--output_dir", "o"],
                                                                             look_for_args_file=False)
    assert plain.hub_revision is None and plain.hub_create_pr is False
