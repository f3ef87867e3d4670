"""`pyrawan export` and `push`: the diffusers pipeline folder samples like `pyrawan sample` (also in a process
where pyrawan cannot be imported), the single file has Wan's original names and reads back exactly, the model
card comes from the manifests, and push verifies, lists and refuses without touching the network."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from pyrawan.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = ["a red square moving right", "a cat runs in the park"]
SEED = 5


def pyrawan(*args, rc: int = 0) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == rc, result.output[-3000:]
    return result.output


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Three tiny models (pyramidal, PPF, DMD-PT* few-step with LoRA), their diffusers exports and samples."""
    from pyrawan.commands import convert, distill
    from pyrawan.recipe import load_recipe
    from pyrawan.train.synthetic import for_recipe

    root = tmp_path_factory.mktemp("export")
    convert.run(load_recipe("tiny", [], kind="convert"), root / "pyr")
    convert.run(load_recipe("tiny", ["pyramid.kind=ppf"], kind="convert"), root / "ppf")
    r = load_recipe("tiny-dmd", ["train.checkpoint.every=0", "train.steps=2", "distill.generator_every=1",
                                 "distill.teach_pairs=2"], kind="distill")
    distill.run(r, root / "dmd", source=for_recipe(r, items=6), show_progress=False)
    for name in ("pyr", "ppf", "dmd"):
        pyrawan("export", root / name, "-o", root / f"E-{name}")
        prompts = [x for p in PROMPTS for x in ("--prompt", p)]
        pyrawan("sample", "--model", root / name, *prompts, "--seed", SEED, "-q", "-o", root / f"S-{name}")
    pyrawan("export", root / "dmd", "--lora", "separate", "-o", root / "E-dmd-lora")
    return root


def sampled(folder: Path) -> torch.Tensor:
    """The latents `pyrawan sample` wrote, in prompt order: [N, 16, T, H, W]."""
    files = sorted((folder / "latents").glob("*.safetensors"))
    return torch.cat([load_file(f)["latents"] for f in files])


@pytest.fixture
def modules_cache(tmp_path, monkeypatch):
    """diffusers copies trusted local code into its modules cache: keep it in the test's folder."""
    from diffusers.utils import dynamic_modules_utils

    monkeypatch.setattr(dynamic_modules_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))


# ---- the diffusers folder ------------------------------------------------------------------------------------

def test_the_pipeline_files_import_only_torch_numpy_and_diffusers():
    from pyrawan.export import diffusers_folder as df

    allowed = {"__future__", "math", "functools", "contextlib", "inspect", "numpy", "torch", "diffusers"}
    for source in (df.pipeline_source(), df.ppf_source()):
        tree = ast.parse(source)
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert {n.split(".")[0] for n in names} <= allowed, names


def test_export_code_points_down_never_at_commands_or_the_cli():
    package = Path(__file__).resolve().parents[1] / "pyrawan" / "export"
    for file in package.glob("*.py"):
        tree = ast.parse(file.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(n.startswith(("pyrawan.commands", "pyrawan.cli")) for n in names), (file.name, names)


def test_export_writes_a_complete_pipeline_folder_with_card_and_manifest(work):
    out = work / "E-ppf"
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == ["pyramidal_wan", "PyramidalWanPipeline"]
    assert index["transformer"] == ["ppf_wan_transformer", "PPFWanTransformer"]
    assert {"tokenizer", "text_encoder", "vae", "scheduler"} <= index.keys() and index["pyramid"]["kind"] == "ppf"
    for part in ("tokenizer", "text_encoder", "vae", "scheduler", "transformer"):
        assert (out / part).is_dir()
    assert (out / "pyramidal_wan.py").is_file() and (out / "transformer" / "ppf_wan_transformer.py").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "export" and manifest["inputs"][0]["kind"] == "convert"
    assert "ok:" in pyrawan("verify", out)
    lineage = json.loads(pyrawan("lineage", out, "--json"))
    assert [n["kind"] for n in lineage] == ["export", "convert"]
    index = json.loads((work / "E-pyr" / "model_index.json").read_text())
    assert index["transformer"] == ["diffusers", "WanTransformer3DModel"]


@pytest.mark.parametrize("name", ["pyr", "dmd", "ppf"])
def test_the_exported_folder_samples_the_same_latents_as_pyrawan_sample(work, name, modules_cache):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(work / f"E-{name}", trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe).__name__ == "PyramidalWanPipeline" and type(pipe).__module__.startswith("diffusers_modules")
    latents = pipe(PROMPTS, seed=SEED, output_type="latent").frames
    torch.testing.assert_close(latents, sampled(work / f"S-{name}"), atol=1e-5, rtol=0)
    one = pipe(PROMPTS[1], generator=torch.Generator("cpu").manual_seed(SEED + 1), output_type="latent").frames
    torch.testing.assert_close(one, latents[1:], atol=1e-5, rtol=0)                 # prompt i uses seed + i


def test_lora_kept_separate_loads_with_load_lora_weights(work, modules_cache):
    from diffusers import DiffusionPipeline

    out = work / "E-dmd-lora"
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    merged = load_file(work / "dmd" / "transformer" / "diffusion_pytorch_model.safetensors")
    base = load_file(out / "transformer" / "diffusion_pytorch_model.safetensors")
    assert not torch.equal(merged["blocks.0.attn1.to_q.weight"], base["blocks.0.attn1.to_q.weight"])
    pipe = DiffusionPipeline.from_pretrained(out, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(out)
    latents = pipe(PROMPTS, seed=SEED, output_type="latent").frames
    torch.testing.assert_close(latents, sampled(work / "S-dmd"), atol=1e-4, rtol=0)
    assert "- lora" in (out / "README.md").read_text() and "load_lora_weights" in (out / "README.md").read_text()


ISOLATED = r"""
import json, sys
PROMPTS, SEED = %r, %d
class NoPyrawan:
    def find_spec(self, name, path=None, target=None):
        if name == "pyrawan" or name.startswith("pyrawan."):
            raise ImportError("pyrawan is not importable in this process")
sys.meta_path = [NoPyrawan()] + [f for f in sys.meta_path if "pyrawan" not in getattr(f, "__module__", "")]
sys.path = [p for p in sys.path if p.rstrip("/") != sys.argv[1]]
try:
    import pyrawan
    raise SystemExit("pyrawan could be imported")
except ImportError:
    pass
import torch
from diffusers import DiffusionPipeline
torch.set_num_threads(1)
found = {}
for folder in sys.argv[2:]:
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    if folder.endswith("lora"):
        pipe.load_lora_weights(folder)
    found[folder] = pipe(PROMPTS, seed=SEED, output_type="latent").frames.tolist()
assert not any(m == "pyrawan" or m.startswith("pyrawan.") for m in sys.modules)
print(json.dumps(found))
"""


@pytest.mark.slow
def test_in_a_process_where_pyrawan_cannot_be_imported_the_exports_sample_identically(work, tmp_path):
    """The real trust boundary: a fresh interpreter (-I), no pyrawan on the path and an import blocker."""
    names = ["E-pyr", "E-dmd", "E-ppf", "E-dmd-lora"]
    script = ISOLATED % (PROMPTS, SEED)
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf"),
           "PATH": os.environ.get("PATH", "")}
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "-I", "-c", script, root, *[str(work / n) for n in names]], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in names:
        diff = (torch.tensor(found[str(work / name)]) - sampled(work / f"S-{name.split('-')[1]}")).abs().max().item()
        assert diff <= (1e-4 if name.endswith("lora") else 1e-5), (name, diff)


# ---- the single file -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def single(work) -> Path:
    pyrawan("export", work / "pyr", "--format", "single-file", "-o", work / "wan-pyr")
    return work / "wan-pyr" / "wan-pyr.safetensors"


def test_single_file_has_the_original_names_and_diffusers_reads_it_back_to_our_weights(work, single):
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    ours = load_file(work / "pyr" / "transformer" / "diffusion_pytorch_model.safetensors")
    state = load_file(single)
    assert {"head.head.weight", "head.modulation", "blocks.0.self_attn.q.weight", "blocks.0.cross_attn.o.weight",
            "blocks.0.norm3.weight", "blocks.0.ffn.0.weight", "blocks.0.modulation", "time_projection.1.weight",
            "text_embedding.0.weight", "time_embedding.2.bias", "patch_embedding.weight"} <= state.keys()
    assert not any("attn1" in k or "to_q" in k or "scale_shift_table" in k for k in state)
    back = convert_wan_transformer_to_diffusers(dict(state))
    assert back.keys() == ours.keys() and all(torch.equal(back[k], ours[k]) for k in ours)
    model = WanTransformer3DModel.from_single_file(str(single), config=str(work / "E-pyr"), subfolder="transformer")
    assert all(torch.equal(v, ours[k]) for k, v in model.state_dict().items())
    card = (single.parent / "README.md").read_text()
    assert "comfyui" in card and "library_name" not in card


def test_convert_reads_the_single_file_back_exactly(work, single, monkeypatch):
    monkeypatch.chdir(work)
    pyrawan("convert", "tiny", f"base={single}", "-o", work / "back")
    a = load_file(work / "pyr" / "transformer" / "diffusion_pytorch_model.safetensors")
    b = load_file(work / "back" / "transformer" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (work / "pyr" / "pyramid.json").read_text() == (work / "back" / "pyramid.json").read_text()
    assert [n["kind"] for n in json.loads(pyrawan("lineage", work / "back", "--json"))] == ["convert", "export", "convert"]


# ---- refusals ------------------------------------------------------------------------------------------------

def test_export_refuses_what_it_cannot_write_before_loading(work, tmp_path):
    out = tmp_path / "x"
    assert "PPF model" in pyrawan("export", work / "ppf", "--format", "single-file", "-o", out, rc=2)
    assert "holds no LoRA adapters" in pyrawan("export", work / "pyr", "--lora", "separate", "-o", out, rc=2)
    assert "--format 'onnx'" in pyrawan("export", work / "pyr", "--format", "onnx", "-o", out, rc=2)
    assert "not a model" in pyrawan("export", work / "E-pyr", "-o", out, rc=2)
    assert not out.exists()


# ---- the model card ------------------------------------------------------------------------------------------

def front_matter(readme: Path) -> dict:
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_the_card_is_rendered_from_the_manifests_with_eval_results(work, tmp_path):
    from pyrawan.eval.artifact import build_eval, write_eval
    from pyrawan.manifest import write_manifest

    ev = tmp_path / "eval"
    ev.mkdir()
    videos = [{"index": i, "prompt": p, "seed": i, "video": None, "values": {"toybench": 0.5 + 0.1 * i}}
              for i, p in enumerate(PROMPTS)]
    write_eval(ev, build_eval("quality", "dmd 2-2-1", videos, schedule="2-2-1"))
    write_manifest(ev, "eval-quality", {"kind": "eval-quality"})
    pyrawan("export", work / "dmd", "--eval", ev, "-o", tmp_path / "E")
    meta = front_matter(tmp_path / "E" / "README.md")
    assert meta["library_name"] == "diffusers" and meta["pipeline_tag"] == "text-to-video"
    assert {"pyrawan", "wan2.1", "pyramidal", "distilled", "few-step"} <= set(meta["tags"])
    card = (tmp_path / "E" / "README.md").read_text()
    assert "| distill | dmd | dmd-ptstar to 2-2-1" in card and "LoRA r=4" in card and "2 steps of batch 2" in card
    assert "few-step, levels [[1.0, 0.5], [1.0, 0.5], [1.0]]" in card and "guidance: 1.0 (off)" in card
    assert "| 2-2-1 | 5 |" in card and "The baseline, 0-0-50 at full resolution" in card    # FLOPs vs baseline
    assert "## Evaluation" in card and "| toybench | 0.55 |" in card
    assert [i["kind"] for i in json.loads((tmp_path / "E" / "manifest.json").read_text())["inputs"]] == \
        ["distill", "eval-quality"]


def test_base_model_and_licence_come_from_a_hub_base():
    from pyrawan.export.card import _hub_id, base_model

    steps = [{"recipe": {"base": "hf://Wan-AI/Wan2.1-T2V-1.3B-Diffusers@main"}}, {"recipe": {"base": "runs/pyr"}}]
    assert base_model(steps) == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    assert _hub_id("tiny") is None and _hub_id("runs/pyr") is None and _hub_id("/abs/path") is None


# ---- push ----------------------------------------------------------------------------------------------------

class FakeApi:
    """Records what push asks of the Hub; nothing leaves the process."""

    calls: list = []
    endpoint = "https://huggingface.co"

    def __init__(self, *args, **kwargs):
        pass

    def create_repo(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_branch", repo_id, kwargs))

    def create_commit(self, repo_id, operations, **kwargs):
        FakeApi.calls.append(("create_commit", repo_id, sorted(op.path_in_repo for op in operations), kwargs))

        class Info:
            pr_url = f"https://huggingface.co/{repo_id}/discussions/1"
        return Info()


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub

    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return FakeApi


def test_push_dry_run_lists_exactly_the_files_and_sizes(work, hub):
    out = pyrawan("push", work / "E-pyr", "me/pyramidal-tiny", "--dry-run", "--json")
    plan = json.loads(out[out.index("{"):out.rindex("}") + 1])
    on_disk = {p.relative_to(work / "E-pyr").as_posix(): p.stat().st_size
               for p in (work / "E-pyr").rglob("*") if p.is_file()}
    assert {f["path"]: f["bytes"] for f in plan["files"]} == on_disk and plan["bytes"] == sum(on_disk.values())
    text = pyrawan("push", work / "E-pyr", "me/pyramidal-tiny", "--dry-run")
    assert "transformer/diffusion_pytorch_model.safetensors" in text and f"{len(on_disk)} files" in text
    assert hub.calls == []


def test_push_offline_stops_before_any_request(work, hub):
    out = pyrawan("push", work / "E-pyr", "me/pyramidal-tiny", rc=1)
    assert "HF_HUB_OFFLINE" in out and "nothing was uploaded" in out and hub.calls == []


def test_push_uploads_the_verified_export_in_one_commit(work, hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    url = pyrawan("push", work / "E-pyr", "me/pyramidal-tiny", "--private", "--revision", "v1").strip().splitlines()[-1]
    assert url == "https://huggingface.co/me/pyramidal-tiny/tree/v1"
    (_, repo, made), (_, _, branch), (_, _, files, commit) = hub.calls
    assert repo == "me/pyramidal-tiny" and made["private"] is True and branch["branch"] == "v1"
    assert "model_index.json" in files and "manifest.json" in files and "README.md" in files
    assert commit["revision"] == "v1" and commit["create_pr"] is False
    hub.calls = []
    url = pyrawan("push", work / "E-pyr", "me/pyramidal-tiny", "--create-pr").strip().splitlines()[-1]
    assert url.endswith("/discussions/1") and [c[0] for c in hub.calls] == ["create_repo", "create_commit"]


def test_push_refuses_non_exports_changed_exports_and_bad_repo_ids(work, hub, tmp_path):
    import shutil

    assert "not an export" in pyrawan("push", work / "pyr", "me/x", rc=2)
    assert "not a Hub repository id" in pyrawan("push", work / "E-pyr", "not a repo", rc=2)
    copy = tmp_path / "copy"
    shutil.copytree(work / "E-pyr", copy)
    (copy / "README.md").write_text("edited by hand\n")
    assert "does not verify" in pyrawan("push", copy, "me/x", "--dry-run", rc=2)
    assert hub.calls == []
