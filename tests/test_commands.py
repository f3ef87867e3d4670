"""convert -> sample -> verify end to end on the tiny preset, baseline equivalence, eval flops, torchrun."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from safetensors.torch import load_file

from pyrawan.data.video import probe_video

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def pyrawan(*args, cwd: Path, check_rc: int | None = 0, process: bool = False) -> subprocess.CompletedProcess:
    """Run the CLI in ``cwd``: in this process (typer's runner, the fast default), or with ``process=True``
    as a new ``python -m pyrawan`` exactly as a user types it."""
    if process:
        proc = subprocess.run([sys.executable, "-m", "pyrawan", *map(str, args)], cwd=cwd, env=ENV,
                              capture_output=True, text=True, timeout=300)
    else:
        proc = in_process(args, cwd)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stdout + proc.stderr
    return proc


def in_process(args, cwd: Path) -> subprocess.CompletedProcess:
    """``pyrawan ARGS`` through typer's runner with ``cwd`` as the working folder."""
    from typer.testing import CliRunner

    from pyrawan.cli import app

    before = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("e2e")
    shutil.copytree(ROOT / "recipes", work / "recipes")
    pyrawan("convert", "recipes/tiny.yaml", "-o", "A", cwd=work)
    return work


def test_convert_writes_a_pyramidal_artifact_that_references_unchanged_components(converted):
    art = converted / "A"
    pyramid = json.loads((art / "pyramid.json").read_text())
    assert pyramid["num_stages"] == 3 and pyramid["resizer"] == "haar"
    assert pyramid["stage_latents"] == [[5, 8, 8], [3, 4, 4], [2, 2, 2]]
    assert (art / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert not (art / "vae").exists()                                   # referenced, not copied
    components = json.loads((art / "components.json").read_text())["components"]
    assert components["vae"]["preset"] == "tiny" and len(components["vae"]["sha256"]) == 64
    from pyrawan.models.artifact import state_dict_sha256
    from pyrawan.models.presets import build_preset

    tiny = build_preset("tiny")                                         # convert changes no weight
    assert components["vae"]["sha256"] == state_dict_sha256(tiny.vae)
    saved = load_file(str(art / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert saved.keys() == tiny.transformer.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in tiny.transformer.state_dict().items())
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["kind"] == "convert" and manifest["recipe"]["resolved"]["pyramid"]["boundaries"]
    assert {o["path"] for o in manifest["outputs"]} >= {"pyramid.json", "components.json"}


def test_sample_end_to_end_then_verify_and_lineage(converted):
    proc = pyrawan("sample", "--model", "A", "--prompt", "a red square moving left", "--seed", "0", "-o", "B",
                   cwd=converted)
    out = converted / "B"
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["seed"] == 0
    info = probe_video(out / records[0]["video"])
    assert (info["frames"], info["fps"], info["width"], info["height"]) == (17, 16, 64, 64)
    latents = load_file(out / records[0]["latents"])["latents"]
    assert latents.shape == (1, 16, 5, 8, 8) and torch.isfinite(latents).all()
    assert "schedule 2-2-2" in proc.stderr
    pyrawan("verify", "B", cwd=converted)
    lineage = json.loads(pyrawan("lineage", "B", "--json", cwd=converted).stdout)
    assert [n["kind"] for n in lineage] == ["sample", "convert"]
    # the same seed gives the same latents; a tampered artifact fails verify
    pyrawan("sample", "--model", "A", "--prompt", "a red square moving left", "--seed", "0", "-o", "B2", "-q",
            cwd=converted)
    again = load_file(next((converted / "B2" / "latents").iterdir()))["latents"]
    assert torch.equal(latents, again)
    target = next((out / "latents").iterdir())
    target.write_bytes(target.read_bytes()[:-1] + b"\x00")
    bad = pyrawan("verify", "B", cwd=converted, check_rc=1)
    assert target.name in bad.stdout + bad.stderr


def test_sample_refuses_a_tampered_model_and_a_wrong_schedule(converted, tmp_path):
    bad = pyrawan("sample", "--model", "A", "--prompt", "x", "--schedule", "20-20", "-o", tmp_path / "S",
                  cwd=converted, check_rc=2)
    assert "--schedule" in bad.stderr and "3" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "S").exists()
    copy = tmp_path / "A"
    shutil.copytree(converted / "A", copy)
    (copy / "pyramid.json").write_text((copy / "pyramid.json").read_text().replace('"haar"', '"dct"'))
    bad = pyrawan("sample", "--model", copy, "--prompt", "x", "-o", tmp_path / "S", cwd=converted, check_rc=2)
    assert "pyramid.json" in bad.stderr


def test_sample_rejects_bad_options_and_unverifiable_models_before_loading(converted, tmp_path):
    bad = pyrawan("sample", "--model", "A", "--prompt", "x", "--shift", "0", "-o", tmp_path / "S", cwd=converted, check_rc=2)
    assert "--shift" in bad.stderr and not (tmp_path / "S").exists()
    bad = pyrawan("sample", "--model", "A", "--prompt", "x", "--frames", "0", "-o", tmp_path / "S", cwd=converted, check_rc=2)
    assert "--frames = 0" in bad.stderr
    copy = tmp_path / "A"
    shutil.copytree(converted / "A", copy)
    (copy / "manifest.json").unlink()
    bad = pyrawan("sample", "--model", copy, "--prompt", "x", "-o", tmp_path / "S", cwd=converted, check_rc=2)
    assert "no manifest.json" in bad.stderr
    (tmp_path / "S").mkdir()
    (tmp_path / "S" / "keep.txt").write_text("mine")
    bad = pyrawan("sample", "--model", "A", "--prompt", "x", "-o", tmp_path / "S", cwd=converted, check_rc=2)
    assert "already exists" in bad.stderr and (tmp_path / "S" / "keep.txt").read_text() == "mine"


def test_sample_refuses_to_overwrite_its_own_model(converted):
    bad = pyrawan("sample", "--model", "A", "--prompt", "x", "-o", "A", "--overwrite", cwd=converted, check_rc=2)
    assert "input" in bad.stderr and "Traceback" not in bad.stderr
    pyrawan("verify", "A", cwd=converted)                                # the model is untouched


def test_sample_with_a_recipe_takes_its_sampling_section(converted, tmp_path):
    pyrawan("sample", "--recipe", "recipes/tiny.yaml", "sampling.shift=2.5", "sampling.schedule=1-1-1", "--model", "A",
            "--prompt", "x", "-q", "-o", tmp_path / "S", cwd=converted)
    plan = json.loads((tmp_path / "S" / "manifest.json").read_text())["recipe"]["resolved"]
    assert plan["shift"] == 2.5 and plan["schedule"] == "1-1-1" and plan["max_sequence_length"] == 16


def test_convert_refuses_to_overwrite_and_reports_recipe_errors(converted):
    again = pyrawan("convert", "recipes/tiny.yaml", "-o", "A", cwd=converted, check_rc=2)
    assert "--overwrite" in again.stderr
    bad = pyrawan("convert", "recipes/tiny.yaml", "video.height=72", "-o", "C", cwd=converted, check_rc=2)
    assert "video.height" in bad.stderr and "64 or 128" in bad.stderr
    assert not (converted / "C").exists()


def test_convert_takes_boundaries_from_a_calibration_artifact(converted, tmp_path):
    from pyrawan.manifest import write_manifest
    from pyrawan.outputs import artifact_dir

    cal = tmp_path / "cal"
    with artifact_dir(cal) as tmp:
        (tmp / "calibration.json").write_text(json.dumps({"boundaries": [0.2, 0.55], "resizer": "haar", "definition": 2,
                                                          "keep_time": False}))
        write_manifest(tmp, "calibrate", {"kind": "calibrate"}, [], {}, None)
    pyrawan("convert", "recipes/tiny.yaml", "--calibration", cal, "-o", tmp_path / "P", cwd=converted)
    assert json.loads((tmp_path / "P" / "pyramid.json").read_text())["boundaries"] == [0.2, 0.55]
    lineage = json.loads(pyrawan("lineage", tmp_path / "P", "--json", cwd=converted).stdout)
    assert [n["kind"] for n in lineage] == ["convert", "calibrate"]
    bad = pyrawan("convert", "recipes/tiny.yaml", "pyramid.resizer=dct", "--calibration", cal, "-o", tmp_path / "Q",
                  cwd=converted, check_rc=2)
    assert "measured for another pyramid" in bad.stderr and "pyramid.resizer = dct" in bad.stderr
    (cal / "calibration.json").write_text(json.dumps({"boundaries": [0.3, 0.6]}))
    bad = pyrawan("convert", "recipes/tiny.yaml", "--calibration", cal, "-o", tmp_path / "Q", cwd=converted, check_rc=2)
    assert "calibration.json" in bad.stderr


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_one_stage_sample_matches_diffusers_wan_pipeline(tmp_path, tiny_components, guidance):
    """`pyrawan sample --schedule 10` on a plain model is WanPipeline with the Euler flow-matching scheduler."""
    from pyrawan.commands.sample import SampleSettings, run
    from pyrawan.models.denoiser import pipeline_for

    steps, shift, prompt, negative = 10, 3.0, "a blue circle moving up", "blurry"
    run(SampleSettings(prompts=[prompt], model="tiny", schedule=str(steps), shift=shift, guidance=guidance,
                       negative_prompt=negative, seed=7, progress=False), tmp_path / "S")
    ours = load_file(next((tmp_path / "S" / "latents").iterdir()))["latents"]

    pipe = pipeline_for(tiny_components)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    set_timesteps = pipe.scheduler.set_timesteps      # Wan's grid, without diffusers' double-shifted sigma_min
    pipe.scheduler.set_timesteps = lambda n, device=None: set_timesteps(
        sigmas=torch.linspace(1, 0, n + 1)[:-1].numpy(), device=device)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(prompt=prompt, negative_prompt=negative, height=64, width=64, num_frames=17,
                  num_inference_steps=steps, guidance_scale=guidance, max_sequence_length=16,
                  generator=torch.Generator("cpu").manual_seed(7), output_type="latent").frames
    assert ours.shape == theirs.shape == (1, 16, 5, 8, 8)
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_eval_flops_reproduces_the_paper_table(tmp_path):
    proc = pyrawan("eval", "flops", "recipes/wan1.3b.yaml", "--schedules", "0-0-50,20-20-10", "-o", tmp_path / "F",
                   cwd=ROOT)
    report = json.loads((tmp_path / "F" / "flops.json").read_text())
    totals = {row["schedule"]: row["total_tflops"] for row in report["schedules"]}
    assert totals["0-0-50"] == pytest.approx(2 * 12592, rel=0.01)
    assert totals["20-20-10"] == pytest.approx(2 * 2821, rel=0.01)
    assert "20-20-10" in proc.stdout
    pyrawan("eval", "flops", "wan1.3b", "--no-guidance", "--schedules", "2-2-1,0-0-2", "-o", tmp_path / "G", cwd=ROOT)
    distilled = json.loads((tmp_path / "G" / "flops.json").read_text())
    rows = {row["schedule"]: row["total_tflops"] for row in distilled["schedules"]}
    assert rows["2-2-1"] == pytest.approx(282, rel=0.01) and rows["0-0-2"] == pytest.approx(504, rel=0.01)


@pytest.mark.slow
def test_sample_shards_prompts_across_torchrun_ranks(converted, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square moving left\na blue circle moving up\na green triangle\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pyrawan", "sample", "--model", "A", "--prompts", str(prompts), "-q", "-o", str(tmp_path / "R")]
    proc = subprocess.run(cmd, cwd=converted, env={**ENV, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = [json.loads(line) for line in (tmp_path / "R" / "samples.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2] and [r["seed"] for r in records] == [0, 1, 2]
    manifest = json.loads((tmp_path / "R" / "manifest.json").read_text())
    assert manifest["metrics"]["world_size"] == 2 and len(manifest["outputs"]) == 7   # 3 mp4 + 3 latents + jsonl
    # rank 1 rendered prompt 1 exactly as a single process would
    pyrawan("sample", "--model", "A", "--prompt", "a blue circle moving up", "--seed", "1", "-q", "-o",
            tmp_path / "single", cwd=converted)
    one = load_file(next((tmp_path / "single" / "latents").iterdir()))["latents"]
    two = load_file(tmp_path / "R" / records[1]["latents"])["latents"]
    assert torch.allclose(one, two, atol=1e-5)
