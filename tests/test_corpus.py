"""The bad-input corpus (tests/corpus/): every case exits with its code, names the culprit, shows no traceback
and writes nothing. Runs in-process through typer's CliRunner, in a scratch working folder."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pyrawan.cli import app
from test_manifest import make_artifact

CORPUS = Path(__file__).parent / "corpus"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))


def snapshot(folder: Path) -> dict[str, int]:
    """Every path under ``folder`` with its size (folders: -1), to prove nothing was written."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size if p.is_file() else -1)
            for p in sorted(folder.rglob("*"))}


def refuse(args: list[str], cwd: Path, expect: list[str], code: int = 2) -> str:
    """Run ``pyrawan ARGS`` in ``cwd``; check the exit code, the message, no traceback, nothing written."""
    before = snapshot(cwd)
    result = CliRunner().invoke(app, [str(a) for a in args])
    text = " ".join(result.output.split())
    assert result.exit_code == code, (args, result.exit_code, text, result.exception)
    for words in expect:
        assert words in text, (args, words, text)
    assert "Traceback" not in result.output and "unexpected" not in text, text
    assert snapshot(cwd) == before, ("something was written", args)
    return text


def header(path: Path, key: str, default: str | None = None) -> str | None:
    match = re.search(rf"^# {key}: (.+)$", path.read_bytes().decode("utf-8", "replace"), re.MULTILINE)
    return match.group(1).strip() if match else default


@pytest.fixture
def work(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


# ---- recipes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted((CORPUS / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_recipe(path: Path, work: Path):
    expect = [header(path, "expect"), path.name]
    code = int(header(path, "exit", "2"))
    refuse(["recipe", "validate", path], work, expect, code)
    refuse([header(path, "command", "convert"), path, "-o", "out"], work, expect, code)


# ---- datasets ------------------------------------------------------------------------------------

@pytest.mark.parametrize("folder", sorted(p for p in (CORPUS / "datasets").iterdir() if p.is_dir()),
                         ids=lambda p: p.name)
def test_bad_dataset(folder: Path, work: Path):
    data = work / folder.name
    shutil.copytree(folder, data, ignore=shutil.ignore_patterns("expect.txt"))
    expect = (folder / "expect.txt").read_text(encoding="utf-8").splitlines()
    refuse(["calibrate", data, "-r", "tiny", "-o", "out"], work, expect)


# ---- manifests -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CASES["manifests"]))
def test_bad_manifest(name: str, work: Path):
    case = CASES["manifests"][name]
    art = work / "art"
    art.mkdir()
    shutil.copyfile(CORPUS / "manifests" / name, art / "manifest.json")
    refuse([case["command"], art], work, [case["expect"]], case["exit"])


def test_every_corpus_manifest_has_a_case():
    assert sorted(p.name for p in (CORPUS / "manifests").glob("*.json")) == sorted(CASES["manifests"])


# ---- flags and overrides -------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES["flags"], ids=lambda c: " ".join(map(str, c["args"]))[:60])
def test_bad_flag(case: dict, work: Path):
    (work / "afile").write_text("not a folder")
    (work / "notes").mkdir()
    (work / "notes" / "todo.txt").write_text("someone's notes")
    artifact = make_artifact(work / "artifact", kind="calibrate")
    if case.get("mkdir"):
        (work / case["mkdir"]).mkdir()
    if case.get("touch"):
        (work / case["touch"]).write_bytes(b"\x80\x04\x95 pickled or random bytes")
    args = [str(a).replace("{file}", "afile").replace("{folder}", "notes").replace("{artifact}", str(artifact))
            for a in case["args"]]
    refuse(args, work, [case["expect"]], case.get("exit", 2))


# ---- damaged model folders -----------------------------------------------------------------------

def _weights(folder: Path, name: str) -> Path:
    return folder / name / "diffusion_pytorch_model.safetensors"


def _config(folder: Path, **values) -> None:
    """Set ``values`` in the transformer's config.json."""
    import json

    path = folder / "transformer" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


DAMAGE = {
    "random_bytes_weights": lambda f: _weights(f, "vae").write_bytes(os.urandom(4096)),
    "pickle_instead_of_safetensors": lambda f: (_weights(f, "vae").unlink(), (f / "vae" / "diffusion_pytorch_model.bin")
                                                .write_bytes(b"\x80\x04\x95cos\nsystem\n")),
    "truncated_weights": lambda f: _weights(f, "transformer").write_bytes(_weights(f, "transformer").read_bytes()[:999]),
    "garbage_config": lambda f: (f / "vae" / "config.json").write_text("{not json"),
    "heads_zero": lambda f: _config(f, num_attention_heads=0),
    "huge_num_layers": lambda f: _config(f, num_layers=100000),
    "more_layers_than_blocks": lambda f: _config(f, num_layers=5),
    "config_misfits_weights": lambda f: _config(f, num_attention_heads=4),
    "nan_eps": lambda f: (f / "transformer" / "config.json").write_text(
        (f / "transformer" / "config.json").read_text().replace('"eps": 1e-06', '"eps": NaN')),
}


@pytest.mark.parametrize("case", CASES["models"], ids=lambda c: c["damage"])
def test_damaged_model_folder(case: dict, work: Path, tiny_pipeline_dir: Path):
    model = work / "model"
    shutil.copytree(tiny_pipeline_dir, model)
    DAMAGE[case["damage"]](model)
    refuse(["convert", "tiny", f"base={model}", "-o", "out"], work, [case["expect"], str(model)])


# ---- crafted artifacts: the trust boundary -----------------------------------------------------------

@pytest.mark.parametrize("case", CASES["trust"], ids=lambda c: c["craft"])
def test_crafted_artifact(case: dict, work: Path):
    from test_trust_boundary import CRAFTS

    art = CRAFTS[case["craft"]](work)
    args = [str(a).replace("{art}", str(art.relative_to(work))) for a in case["args"]]
    refuse(args, work, [case["expect"]], case.get("exit", 2))


# ---- crafted model artifacts: model files checked like recipes, nothing non-finite published ----------

@pytest.fixture(scope="module")
def tiny_model_artifact(tmp_path_factory, tiny_components) -> Path:
    from test_model_files import model_artifact

    return model_artifact(tmp_path_factory.mktemp("model") / "art", tiny_components)


@pytest.mark.parametrize("case", CASES["model_files"], ids=lambda c: f"{c['file']}:{','.join(c.get('set', {}))}")
def test_crafted_model_artifact(case: dict, work: Path, tiny_model_artifact: Path):
    from test_model_files import craft

    craft(tiny_model_artifact, work / "model", case["file"], case.get("set", {}))
    assert CliRunner().invoke(app, ["verify", "model"]).exit_code == 0
    refuse(["sample", "--model", "model", "--prompt", "a cat", "-o", "out"], work, [case["expect"]], case.get("exit", 2))
