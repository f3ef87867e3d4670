"""``pyrawan sample``: resume after an interruption, numbered default folders, flag validation, SIGKILL + rerun."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import pyrawan.commands.sample as cmd
from pyrawan.commands.sample import SampleSettings, check_flags, partial_folder
from pyrawan.errors import InputError
from pyrawan.manifest import verify
from pyrawan.outputs import release_claims

PROMPTS = ["a red square moving left", "a blue circle moving up", "a green triangle", "a white dot"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def settings(**changes) -> SampleSettings:
    base = dict(prompts=list(PROMPTS), model="tiny", schedule="3", seed=5, progress=False, batch_size=1)
    return SampleSettings(**{**base, **changes})


def latents_of(folder: Path) -> dict[str, torch.Tensor]:
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    return {r["prompt"]: load_file(folder / r["latents"])["latents"] for r in rows}


def test_resume_keeps_the_finished_videos_of_an_interrupted_run(tmp_path, monkeypatch, one_thread, capsys):
    out, written = tmp_path / "S", []
    real_write = cmd.write_sample

    def write_then_stop(*args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(args[1])
        return real_write(*args, **kwargs)

    monkeypatch.setattr(cmd, "write_sample", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        cmd.run(settings(), out)
    release_claims()
    partial = partial_folder(out)
    assert not out.exists() and sorted(p.name for p in (partial / "done").iterdir()) == ["0000.json", "0001.json"]
    assert "2 of 4 video(s) are kept" in capsys.readouterr().err
    kept = json.loads((partial / "done" / "0000.json").read_text())
    kept_video = (partial / kept["video"]).read_bytes()
    damaged = json.loads((partial / "done" / "0001.json").read_text())
    (partial / damaged["latents"]).write_bytes(b"not safetensors")   # a damaged kept file is rendered again

    with pytest.raises(InputError, match="--resume"):                  # no silent restart over kept videos
        cmd.run(settings(), out)
    with pytest.raises(InputError, match="schedule"):                  # resume only the same run
        cmd.run(settings(schedule="4", resume=True), out)
    release_claims()

    written.clear()
    monkeypatch.setattr(cmd, "write_sample", lambda *a, **k: written.append(a[1]) or real_write(*a, **k))
    cmd.run(settings(resume=True, batch_size=3), out)
    assert written == [1, 2, 3] and not partial.exists() and verify(out) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["resumed_videos"] == 1 and manifest["metrics"]["videos"] == 4
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3] and [r["seed"] for r in rows] == [5, 6, 7, 8]
    assert (out / kept["video"]).read_bytes() == kept_video

    cmd.run(settings(batch_size=4), tmp_path / "straight")              # the same latents without interruption
    resumed, straight = latents_of(out), latents_of(tmp_path / "straight")
    for prompt in PROMPTS:
        assert torch.allclose(resumed[prompt], straight[prompt], atol=1e-5, rtol=0)


def test_sample_without_out_takes_the_next_numbered_folder(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="no unfinished run"):
        cmd.run(settings(prompts=PROMPTS[:1], resume=True))
    first = cmd.run(settings(prompts=PROMPTS[:1]))
    second = cmd.run(settings(prompts=PROMPTS[:1]))
    assert (first, second) == (Path("runs/samples-001"), Path("runs/samples-002"))
    assert (tmp_path / "runs" / "samples-002" / "manifest.json").is_file()


def test_flags_are_checked_with_the_recipe_rules_before_any_work():
    bad = settings(guidance=math.nan, seed=-1, batch_size=0, frames=0, shift=-2.0, device="tpu", dtype="int8")
    with pytest.raises(InputError) as err:
        check_flags(bad)
    text = str(err.value)
    for flag in ("--guidance = nan", "--seed = -1", "--batch-size = 0", "--frames = 0", "--shift = -2.0",
                 "--device = 'tpu'", "--dtype = 'int8'"):
        assert flag in text, flag
    with pytest.raises(InputError, match="seed \\+ i"):
        check_flags(settings(seed=2**63 - 2))                          # 4 prompts: seed + 3 overflows
    check_flags(settings(guidance=5.0, shift=[1.0, 2.0, 3.0], frames=17))


def test_bad_flags_exit_cleanly_and_write_nothing(tmp_path):
    from typer.testing import CliRunner

    from pyrawan.cli import app

    result = CliRunner().invoke(app, ["sample", "-p", "x", "--guidance", "nan", "--batch-size", "-1", "-o",
                                      str(tmp_path / "S")])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in text, text
    assert "--guidance = nan" in text and "--batch-size = -1" in text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sigkill_then_resume_finishes_the_run(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(8)))
    args = [sys.executable, "-m", "pyrawan", "sample", "--model", "tiny", "--prompts", str(prompts), "--schedule",
            "40", "--batch-size", "1", "-q", "-o", str(tmp_path / "S")]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = tmp_path / "S.partial" / "done"
    deadline = time.time() + 120
    while time.time() < deadline and not (done.is_dir() and len(list(done.glob("*.json"))) >= 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = len(list(done.glob("*.json")))
    assert 2 <= kept < 8 and not (tmp_path / "S").exists()
    again = subprocess.run(args + ["--resume"], env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{kept} of 8 video(s) already done" in again.stderr
    assert len((tmp_path / "S" / "samples.jsonl").read_text().splitlines()) == 8 and verify(tmp_path / "S") == []
