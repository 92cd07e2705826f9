"""push_to_hub end to end against a local Hub-compatible server (no network)."""

import json
import os
import subprocess
import sys

from hub_server import HubServer

SCRIPT = r'''
import json, os, sys, numpy as np, torch, transformers
from hf_cft import CFTConfig, fit_cft
from hf_cft.head import CFTHead
from huggingface_hub import HfApi
token = "hf_secret_token_123"
torch.manual_seed(0)
cfg = transformers.ViTConfig(image_size=24, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32, num_labels=3, id2label={0: "a", 1: "b", 2: "c"},
                             label2id={"a": 0, "b": 1, "c": 2})
head = CFTHead(transformers.ViTForImageClassification(cfg).eval())
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
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "0",
               "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        env.pop("HF_TOKEN", None)
        proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                              cwd=str(tmp_path), timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
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
    assert not leaked and "hf_secret_token_123" not in proc.stderr + proc.stdout


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
print(json.dumps({"library": head.library, "paths": list(head.spec.paths), "diff": diff}))
'''


def test_a_timm_model_on_the_hub_loads_as_timm(tmp_path):
    with HubServer() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "0",
               "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        proc = subprocess.run([sys.executable, "-c", TIMM_SCRIPT], capture_output=True, text=True, env=env,
                              cwd=str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["library"] == "timm" and out["paths"] == ["fc"] and out["diff"] < 1e-5
