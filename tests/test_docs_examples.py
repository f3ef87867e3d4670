"""Every `--help` example and every `pyrawan ...` command in README.md and docs/*.md must work.

Fast (``test_every_documented_command_parses``): each command names an existing command, only options
that command has, shipped recipes that resolve, and overrides that validate against the recipe.
Slow (``test_help_examples_run``): every help example runs, in the order a newcomer would run them,
in a fresh folder, shrunk by the explicit substitutions in ``TINY`` (each says why).

Commands in the docs name the paper's model, data and GPUs, which a test cannot have; they are
parsed, not run (the help examples cover the same commands on the toy world).
"""
from __future__ import annotations

import functools
import json
import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pyrawan import recipe as rc
from pyrawan.cli import app
from pyrawan.cli_help import EXAMPLES
from pyrawan.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FIXTURES = Path(__file__).parent / "fixtures"

# Placeholder tokens the docs use for "your value" (not checked as recipes or paths).
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$|[<>$]|\.\.\.")


@functools.lru_cache(maxsize=1)
def root_command():
    return typer.main.get_command(app)


def subcommand(group, name: str):
    return (getattr(group, "commands", None) or {}).get(name)


# ---- finding the commands ------------------------------------------------------------------------

def code_lines(text: str) -> list[str]:
    """Lines of fenced and indented code blocks, with backslash continuations joined."""
    out, fenced, pending = [], False, ""
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or line.startswith("    ")):
            continue
        line = pending + line.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        out.append(line)
    return out


def commands_in(text: str) -> list[str]:
    """``pyrawan`` command lines of the code blocks (comments and ``&&`` chains split off)."""
    found = []
    for line in code_lines(text):
        line = re.sub(r"\s+#\s.*$", "", line)
        for part in line.split("&&"):
            match = re.search(r"(?:^|\s|/)pyrawan\s+(\S.*)$", part.strip())
            if match and not part.strip().startswith(("#", "import", "from", "python -c")):
                found.append("pyrawan " + match.group(1).strip())
    return found


def inline_commands(text: str) -> list[str]:
    """Inline code spans of prose that start with ``pyrawan `` (often a command with some of its options)."""
    return [m.strip() for m in re.findall(r"`(pyrawan [^`]+)`", text)]


def documented() -> list[tuple[str, str, bool]]:
    """``(where, command, full)``: ``full`` for code blocks (checked whole), False for inline spans."""
    items = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        items += [(doc.name, c, True) for c in commands_in(text)]
        items += [(doc.name, c, False) for c in inline_commands(text)]
    items += [("--help", example, True) for example in EXAMPLES.values()]
    return items


# ---- checking one command without running it -----------------------------------------------------

def tokens_of(command: str) -> list[str]:
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    return words[1:]                                   # after "pyrawan"


def find_command(words: list[str]) -> tuple:
    """The click command the words name, the words after it, and its path."""
    command, path = root_command(), []
    while words and subcommand(command, words[0]) is not None:
        command, path, words = subcommand(command, words[0]), path + [words[0]], words[1:]
    return command, words, " ".join(path)


def option_names(command) -> set[str]:
    names = {"--help"}
    for p in command.params:
        names.update(getattr(p, "opts", []))
        names.update(getattr(p, "secondary_opts", []))
    return names


def problems_of(command_line: str, full: bool) -> list[str]:
    """Why ``command_line`` would not parse (empty when it does)."""
    words = tokens_of(command_line)
    while words and words[0] in option_names(root_command()):          # --debug, --version, --help
        words = words[1:]
    if not words or PLACEHOLDER.search(words[0]):                      # `pyrawan COMMAND RECIPE ...`
        return []
    if len(words) > 1 and "/" in words[1] and not full:                # `pyrawan eval quality/compare/...`
        return [p for name in words[1].split("/") for p in problems_of(f"pyrawan {words[0]} {name}", False)]
    command, rest, path = find_command(words)
    if hasattr(command, "commands"):
        return [] if not rest and not full else [f"no command {' '.join(words[:2])!r}"]
    known, problems = option_names(command), []
    positional = []
    for word in rest:
        bare = word.strip("[]()")
        if bare.startswith("-") and len(bare) > 1 and not re.match(r"^-\d", bare):
            for name in bare.split("=")[0].split("/"):                  # --guidance/--no-guidance
                if name not in known:
                    problems.append(f"{path}: no option {name}")
        elif "|" not in word and not word.startswith("["):
            positional.append(word)
    arguments = [p.name for p in command.params if getattr(p, "param_type_name", "") == "argument"]
    if full and arguments[:1] in (["recipe"], ["file"]) and positional:
        problems += recipe_problems(path, positional)
    return problems


def recipe_problems(path: str, positional: list[str]) -> list[str]:
    """The recipe resolves and the overrides validate (placeholder values and recipe files are skipped)."""
    recipe, overrides = positional[0], [w for w in positional[1:] if "=" in w]
    if PLACEHOLDER.search(recipe) or recipe.endswith((".yaml", ".yml")):
        return []
    overrides = [o for o in overrides if not PLACEHOLDER.search(o.partition("=")[2])]
    try:
        rc.load_recipe(recipe, overrides)
    except InputError as err:
        return [f"{path} {recipe} {' '.join(overrides)}: {err}"]
    return []


def test_commands_are_found_in_the_docs():
    items = documented()
    assert len([i for i in items if i[0] == "--help"]) == len(EXAMPLES) >= 20
    assert sum(1 for i in items if i[2] and i[0] != "--help") > 50           # code-block commands
    assert ("README.md", "pyrawan recipe validate wan1.3b", True) in items


def test_the_checker_catches_what_rots():
    assert problems_of("pyrawan finetune toy-finetune pyramid.boundaries=[0.4]", True)      # 3 stages need 2
    assert problems_of("pyrawan eval schedules --budget 1T", True)                          # no such option
    assert problems_of("pyrawan finetun toy", True)                                         # no such command
    assert problems_of("pyrawan convert no-such-recipe", True)
    assert not problems_of("pyrawan convert toy pyramid.boundaries=[0.5,0.9] -o runs/x", True)


def test_every_documented_command_parses(tmp_path, monkeypatch):
    """The command exists, its options exist, its recipe resolves and its overrides validate (in an empty
    working folder: whether ``runs/pyr`` reads as a local path depends on what the folder holds)."""
    monkeypatch.chdir(tmp_path)
    bad = [f"{where}: {command}: {'; '.join(p)}" for where, command, full in documented()
           if (p := problems_of(command, full))]
    assert not bad, "\n".join(bad)


def test_help_usage_and_examples_read_plainly():
    runner = CliRunner()
    for path in ("finetune", "calibrate", "eval compare"):
        out = runner.invoke(app, [*path.split(), "--help"], terminal_width=200).output
        assert "{" not in out.split("Usage:")[1].splitlines()[0], out
    out = runner.invoke(app, ["finetune", "--help"], terminal_width=200).output
    assert "data.root=data/toy" in out and "[0.4]" not in out


# ---- running every help example ------------------------------------------------------------------

# The order a newcomer runs them (each example's inputs are made by an earlier one or by SETUP).
ORDER = ["env", "recipe ls", "recipe validate", "recipe show", "recipe schema", "recipe cp", "eval flops",
         "eval latency", "toy make-dataset", "calibrate", "convert", "verify", "finetune", "lineage", "distill",
         "sample", "toy bench", "eval quality", "eval compare", "eval report", "eval schedules",
         "eval vbench export", "eval vbench import", "export", "push", "demo"]

# Shrinking substitutions, (old, new) on the example's text, or extra words appended; each says why.
TINY: dict[str, list] = {
    "toy make-dataset": [("--n 64", "--n 6")],                        # 6 videos are enough to cache and train
    "calibrate": [["calibrate.plots=false"]],                         # plots are tested in test_calibrate
    "finetune": [["train.steps=2", "train.batch_size=3", "train.validation.holdout=1",
                  "train.checkpoint.every=1"]],                      # 2 steps, a checkpoint each
    "distill": [["train.steps=1", "train.batch_size=1", "distill.teach_pairs=1", "train.checkpoint.every=0"]],
    "sample": [["--schedule", "1-1-1"]],                             # 3 forwards instead of 50
    "eval quality": [("--suite toy-8 --seeds 0,1", "--suite toy-2 --seeds 0"), ["--schedule", "1-1-1",
                     "--reference-schedule", "2", "-q"]],
    "eval schedules": [("--suite toy-4", "--suite toy-2"), ["-q"]],
    "eval vbench export": [["--samples-per-prompt", "1", "--schedule", "1-1-1", "-q"]],
    "eval latency": [("--repeats 3", "--repeats 1")],
}
# Inputs a help example names that no earlier example writes: made here (a user brings their own).
SETUP = {
    "eval compare": ["eval quality --model toy --suite toy-2 --seeds 0 --schedule 2 -q -o runs/eval-teacher"],
    "eval vbench export": [],              # VBench_full_info.json: the fixture, copied below
}
# Not run here, and why (each is run by its own test).
NOT_RUN = {"demo": "runs minutes even with --quick; tests/test_toy.py runs the quick demo (slow)"}


def tiny(path: str, example: str) -> list[str]:
    words = example
    extra: list[str] = []
    for change in TINY.get(path, []):
        if isinstance(change, tuple):
            assert change[0] in words, f"TINY[{path!r}] is stale: {change[0]!r} is not in {example!r}"
            words = words.replace(*change)
        else:
            extra += change
    return tokens_of(words) + extra


def test_every_example_has_a_place_in_the_run():
    assert sorted(ORDER) == sorted(EXAMPLES), "add the new command's example to ORDER (and TINY if it is slow)"


@pytest.mark.slow
def test_help_examples_run(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "VBench_full_info.json").write_text((FIXTURES / "vbench" / "VBench_full_info.json").read_text())
    runner = CliRunner()
    for path in ORDER:
        if path in NOT_RUN:
            continue
        for setup in SETUP.get(path, []):
            r = runner.invoke(app, shlex.split(setup))
            assert r.exit_code == 0, f"setup {setup}: {r.output}"
        if path == "eval vbench import":
            write_vbench_results(tmp_path)
        args = tiny(path, EXAMPLES[path])
        r = runner.invoke(app, args)
        assert r.exit_code == 0, f"pyrawan {' '.join(args)} (help example of {path}): exit {r.exit_code}\n{r.output}"
    assert (tmp_path / "runs" / "dmd" / "manifest.json").is_file()
    assert (tmp_path / "runs" / "finetuned.run" / "checkpoints").is_dir()


def write_vbench_results(folder: Path) -> None:
    """What VBench writes for the exported videos (made-up scores): the file `eval vbench import` reads."""
    videos = sorted(p.name for p in (folder / "runs" / "vbench" / "videos").iterdir())
    per_video = [{"video_path": f"/gpu/videos/{n}", "video_results": 0.9} for n in videos]
    (folder / "results").mkdir(exist_ok=True)
    (folder / "results" / "ft_eval_results.json").write_text(json.dumps({"temporal_flickering": [0.9, per_video]}))
