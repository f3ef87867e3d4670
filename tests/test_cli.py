"""The command line, driven through typer's CliRunner (and once as a real process)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pyrawan import __version__
from pyrawan import recipe as rc
from pyrawan.cli import app
from pyrawan.recipe import RECIPES_DIR, validate_recipe
from test_manifest import make_artifact

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, code: int = 0):
    """Invoke ``pyrawan ARGS`` and check the exit code."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


def flat(text: str) -> str:
    """Collapse whitespace so rich's line wrapping does not matter."""
    return " ".join(text.split())


def recipe_file(tmp_path: Path, kind: str = "convert", **replace: str) -> Path:
    text = (RECIPES_DIR / "tiny.yaml").read_text(encoding="utf-8").replace("kind: convert", f"kind: {kind}")
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_version_and_usage_errors():
    assert run("--version").stdout.strip() == f"pyrawan {__version__}"
    run("recipe", "validate", code=2)  # missing argument
    run("bogus", code=2)


def test_validate_ok_and_unknown_key_with_suggestion(tmp_path):
    assert run("recipe", "validate", "tiny").stdout.startswith("ok: tiny is a valid convert recipe")
    bad = recipe_file(tmp_path, **{"resizer: haar": "resizr: haar"})
    result = run("recipe", "validate", bad, code=2)
    assert result.stderr.startswith(f"error: {bad}: unknown key 'pyramid.resizr' (did you mean 'pyramid.resizer'?)")


def test_validate_bad_size_and_schedule_exit_2_naming_the_keys(tmp_path):
    result = run("recipe", "validate", "tiny", "video.height=100", "sampling.schedule=2-2", code=2)
    err = flat(result.stderr)
    assert "2 problems" in err and "video.height" in err and "nearest valid values are 64 or 128" in err
    assert "sampling.schedule = '2-2' has 2 stages but the model has 3" in err


def test_show_resolved_yaml_and_json_with_overrides():
    data = json.loads(run("recipe", "show", "tiny", "pyramid.boundaries=[0.2, 0.5]", "--json").stdout)
    assert data["pyramid"]["boundaries"] == [0.2, 0.5] and data["kind"] == "convert"
    text = run("recipe", "show", "wan1.3b", "sampling.schedule=2-2-1").stdout
    assert text.startswith("# resolved recipe; sha256 ")
    shown = yaml.safe_load(text)
    assert shown["sampling"]["schedule"] == "2-2-1" and shown["pyramid"]["boundaries"] == [0.585786, 0.941176]
    assert rc.resolve_recipe(validate_recipe(shown)) == shown  # shown recipes load back unchanged


def test_schema_ls_and_cp(tmp_path):
    schema = json.loads(run("recipe", "schema", "convert").stdout)
    assert "sampling" in schema["properties"]
    assert "did you mean 'convert'" in run("recipe", "schema", "convrt", code=2).stderr
    listing = run("recipe", "ls").stdout
    assert "tiny" in listing and "wan1.3b" in listing and "20-20-10" in listing
    dmd = next(line for line in listing.splitlines() if "toy-dmd-ot" in line)
    assert "2-2-1" in dmd and "20-20-10" not in dmd                 # a distill recipe: the student's schedule
    run("recipe", "cp", "tiny", tmp_path)
    assert (tmp_path / "tiny.yaml").read_bytes() == (RECIPES_DIR / "tiny.yaml").read_bytes()
    assert "already exists" in run("recipe", "cp", "tiny", tmp_path / "tiny.yaml", code=2).stderr
    run("recipe", "cp", "tiny", tmp_path / "tiny.yaml", "--force")
    assert "folders, not files" in flat(run("recipe", "cp", "tiny", tmp_path / "tiny.yaml" / "x.yaml", code=2).stderr)


@pytest.mark.parametrize("args, option", [
    (["toy", "make-dataset", "{tmp}/d", "--fps", "0"], "--fps"),
    (["toy", "make-dataset", "{tmp}/d", "--seed", "-1"], "--seed"),
    (["eval", "latency", "--model", "tiny-random", "--repeats", "0"], "--repeats"),
    (["eval", "latency", "--model", "tiny-random", "--warmup", "-1"], "--warmup"),
    (["eval", "quality", "--samples", "{tmp}", "--batch-size", "0", "-o", "{tmp}/q"], "--batch-size"),
])
def test_out_of_range_numbers_are_refused_by_option_before_any_work(tmp_path, args, option):
    result = run(*[a.format(tmp=tmp_path) for a in args], code=2)
    assert f"Invalid value for '{option}'" in flat(result.output) and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []                                 # nothing written


def test_vbench_import_refuses_an_export_folder_of_another_kind(tmp_path):
    results = tmp_path / "r_eval_results.json"
    results.write_text(json.dumps({"subject_consistency": [0.9, [{"video_path": "/x/a cat-0.mp4",
                                                                   "video_results": 0.9}]]}))
    other = make_artifact(tmp_path / "other", kind="toy-dataset")
    message = flat(run("eval", "vbench", "import", results, "--export", other, "-o", tmp_path / "i", code=2).stderr)
    assert "--export" in message and "'toy-dataset' artifact, not a VBench export" in message
    assert not (tmp_path / "i").exists()


def test_verify_clean_then_flipped_byte_exits_1_naming_the_file(tmp_path):
    art = make_artifact(tmp_path / "art")
    assert run("verify", art).stdout.startswith(f"ok: {art}: all 2 files match manifest.json")
    weights = art / "weights.bin"
    weights.write_bytes(b"\xff" + weights.read_bytes()[1:])
    result = run("verify", art, code=1)
    assert "weights.bin" in result.stdout and "sha256" in result.stdout
    assert "does not verify: 1 of 2 files differ" in result.stderr and "weights.bin" in result.stderr
    report = json.loads(run("verify", art, "--json", code=1).stdout)
    assert report["ok"] is False and report["findings"][0]["path"] == "weights.bin"
    assert "has no manifest.json" in flat(run("verify", tmp_path, code=2).stderr)


def test_lineage_tree_and_json(tmp_path):
    pyramid = make_artifact(tmp_path / "pyr", "pyramid")
    tuned = make_artifact(tmp_path / "tuned", "finetuned", inputs=[pyramid])
    tree = run("lineage", tuned).stdout
    assert tree.index("finetuned") < tree.index("pyramid") and "ok" in tree
    nodes = json.loads(run("lineage", tuned, "--json").stdout)
    assert [(n["kind"], n["depth"]) for n in nodes] == [("finetuned", 0), ("pyramid", 1)]


def test_env_reports_versions_and_offline_flags():
    info = json.loads(run("env", "--json").stdout)
    assert info["versions"]["pyrawan"] == __version__ and "HF_HUB_OFFLINE" in info["environment"]
    assert info["torch"] is None or "cuda_available" in info["torch"]


def test_training_commands_validate_and_exit_2_before_loading_anything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = recipe_file(tmp_path, "finetune")
    result = run("finetune", recipe, "seed=3", "-o", "out", "sampling.guidance=2", code=2)
    assert "no training data: set data.root" in result.stderr                 # checked before anything loads
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
    assert "sampling.guidance" in run("distill", recipe_file(tmp_path, "distill"), "sampling.guidance=0", code=2).stderr
    assert "needs a recipe with kind: distill" in run("distill", "tiny", code=2).stderr
    (tmp_path / "videos").mkdir()
    assert "no dataset found" in run("calibrate", "videos", "-o", "c", code=2).stderr
    assert "calibrate.threshold" in run("calibrate", "videos", "calibrate.threshold=-1", code=2).stderr


def test_unexpected_errors_exit_1_with_a_hint_and_debug_shows_the_traceback(monkeypatch):
    def boom(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(rc, "load_recipe", boom)
    result = run("recipe", "validate", "tiny", code=1)
    assert flat(result.stderr).startswith("error: unexpected ZeroDivisionError: division by zero.")
    assert "--debug" in result.stderr and "Traceback" not in result.stderr
    debug = run("--debug", "recipe", "validate", "tiny", code=1)
    assert "Traceback" in debug.stderr and "boom" in debug.stderr


@pytest.mark.slow
def test_main_runs_as_a_process():
    proc = subprocess.run([sys.executable, "-m", "pyrawan", "recipe", "validate", "tiny", "pyramid.stages=0"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: shipped recipe 'tiny': pyramid.stages = 0")


def _leaf_commands(group, prefix: str = "") -> list[str]:
    found = []
    for name, command in group.commands.items():
        if command.hidden:
            continue
        found += _leaf_commands(command, f"{prefix}{name} ") if hasattr(command, "commands") else [f"{prefix}{name}"]
    return found


def test_every_help_has_an_example_and_no_markup_noise():
    import typer.main

    from pyrawan.cli_help import EXAMPLES

    commands, helps = _leaf_commands(typer.main.get_command(app)), {}
    assert {"convert", "calibrate", "finetune", "sample", "demo", "eval flops", "recipe validate"} <= set(commands)
    for path in commands:
        text = flat(CliRunner().invoke(app, [*path.split(), "--help"], env={"COLUMNS": "200"}).output)
        assert text.count("Example: pyrawan ") == 1, (path, text)                # one example per command
        assert "<bool>" not in text and " . " not in text and not text.endswith(" ."), (path, text)
        helps[path] = text
    assert f"Example: {EXAMPLES['convert']}" in helps["convert"]
    assert "[default: runs/KIND-RECIPE]" in helps["convert"]                  # rich no longer eats defaults
    assert "[default: runs/calibrate-DATA_DIR]" in helps["calibrate"]
