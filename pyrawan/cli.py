"""The ``pyrawan`` command line (typer + rich): one thin function per command, nothing else.

Errors: a ``PyrawanError`` becomes one red paragraph on stderr and its exit code (2 = bad input,
1 = failure while running); any other exception exits 1 with a one-line message (``--debug``
shows the traceback). Usage errors from typer exit 2.
"""
from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree
from typer.core import TyperGroup

from pyrawan import __version__
from pyrawan import manifest as mf
from pyrawan import outputs
from pyrawan import recipe as rc
from pyrawan.errors import InputError, PyrawanError, io_fault_message
from pyrawan.fsutil import atomic_write_bytes
from pyrawan.cli_help import EXAMPLES, polish_help  # noqa: F401  (EXAMPLES: other cli modules add theirs)
from pyrawan.recipe_io import read_yaml

RUN_PANEL = "Run"
INSPECT_PANEL = "Inspect"
ENV_PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "peft", "safetensors", "deepspeed", "av",
                "huggingface_hub", "pydantic", "typer")
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "HF_HUB_CACHE")


def stdout() -> Console:
    """Console for results (bound to the current ``sys.stdout``); plain lines are not hard-wrapped."""
    return Console(highlight=False, soft_wrap=True)


def stderr() -> Console:
    """Console for errors; no hard wrapping, so messages stay greppable and copyable."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


# What Ctrl-C leaves behind, per command (the default: nothing, since outputs appear only when complete).
INTERRUPTED = {
    "finetune": "the model folder OUT was not written; checkpoints already written under OUT.run/checkpoints/ "
                "(if any) are kept, and the same command plus --resume continues from the last one.",
    "distill": "the model folder OUT was not written; checkpoints already written under OUT.run/checkpoints/ "
               "(if any) are kept, and the same command plus --resume continues from the last one.",
    "calibrate": "the latent-cache shards already encoded are kept; the same command continues the cache from the "
                 "first missing shard. The calibration folder was not written.",
    "sample": "the videos already finished are kept (in OUT.partial/); continue with the same command plus "
              "--resume.",
    "demo": "the demo folder holds the steps finished so far; running the demo again starts over in that folder.",
}
INTERRUPTED_DEFAULT = ("nothing was published (outputs are written under a temporary name and renamed only when "
                       "complete, and its temporary files were removed); run the command again.")
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells expect


class PyrawanGroup(TyperGroup):
    """Root command group: turns exceptions into a red paragraph and the right exit code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        polish_help(self)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except PyrawanError as err:
            _report(ctx, str(err))
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt as err:
            command = ctx.invoked_subcommand or "pyrawan"
            # A command that knows what it kept re-raises KeyboardInterrupt(text) (train.run.interrupted).
            kept = str(err) or INTERRUPTED.get(command, INTERRUPTED_DEFAULT)
            stderr().print(f"\ninterrupted: {command}: {kept}",
                           style="yellow", markup=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as err:
            fault = io_fault_message(err)
            if fault is not None:
                _report(ctx, fault)
                raise typer.Exit(1) from None
            _report(ctx, f"unexpected {type(err).__name__}: {err}. This is a bug or an unhandled case; "
                         f"rerun with --debug to see the traceback.")
            raise typer.Exit(1) from None
        finally:
            outputs.release_claims()


def _report(ctx: typer.Context, message: str) -> None:
    """Print ``error: message`` in red (after the traceback with ``--debug``)."""
    if ctx.params.get("debug"):
        stderr().print_exception(show_locals=False)
    stderr().print(f"error: {message}", style="red", markup=False)


app = typer.Typer(cls=PyrawanGroup, no_args_is_help=True, add_completion=False,
                  help="Pyramidal video diffusion for Wan2.1: calibrate, convert, finetune, distill, sample, eval. "
                       "Every run command reads a YAML recipe and writes an artifact folder with manifest.json.")
recipe_app = typer.Typer(no_args_is_help=True, help="Validate, show, list and copy recipes.")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate models and videos (FLOPs, latency, quality).")
app.add_typer(recipe_app, name="recipe", rich_help_panel=INSPECT_PANEL)
app.add_typer(eval_app, name="eval", rich_help_panel=RUN_PANEL)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"pyrawan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", envvar="PYRAWAN_DEBUG", help="Show tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    local_rank: Annotated[Optional[int], typer.Option(
        "--local_rank", "--local-rank", hidden=True,
        help="Injected by the deepspeed launcher right after `-m pyrawan`; LOCAL_RANK in the environment wins.")] = None,
) -> None:
    """Pyramidal video diffusion for Wan2.1."""
    if local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(local_rank))


# ---- shared pieces of every run command ----------------------------------------------------------

RecipeArg = Annotated[str, typer.Argument(
    help="Recipe file, or the name of a shipped recipe (see `pyrawan recipe ls`).", show_default=False)]
OverridesArg = Annotated[Optional[list[str]], typer.Argument(
    help="Overrides key.path=value (value read as YAML), e.g. sampling.schedule=2-2-1 pyramid.boundaries=[0.5,0.9].",
    show_default=False)]
OutOpt = Annotated[Optional[Path], typer.Option("-o", "--out", help="Output artifact folder [default: runs/KIND-RECIPE].")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace an existing artifact folder (the old one stays until the new one is complete).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


@dataclass(frozen=True)
class RunOptions:
    """What a run command gets from RECIPE, overrides, -o and --overwrite."""

    recipe: rc.RecipeBase
    resolved: dict
    out: Path
    overwrite: bool


def run_options(recipe: str, overrides: Sequence[str] | None, kind: str | Sequence[str],
                out: Path | None = None, overwrite: bool = False) -> RunOptions:
    """Load and validate the recipe (of ``kind``) with its overrides; pick the output folder."""
    loaded = rc.load_recipe(recipe, list(overrides or ()), kind=kind)
    name = Path(recipe).name.removesuffix(".yaml").removesuffix(".yml")
    default = Path("runs") / f"{loaded.kind}-{name}"
    return RunOptions(loaded, rc.resolve_recipe(loaded), out or default, overwrite)


# ---- recipe --------------------------------------------------------------------------------------

@recipe_app.command("validate")
def recipe_validate(file: RecipeArg, overrides: OverridesArg = None) -> None:
    """Check a recipe without loading weights: types, unknown keys, pyramid sizes, schedule, boundaries."""
    r = rc.load_recipe(file, overrides or [])
    v, p = r.video, r.pyramid
    stdout().print(f"ok: {file} is a valid {r.kind} recipe: base {r.base}; {v.frames}x{v.height}x{v.width} at "
                   f"{v.fps} fps; {p.stages} stages ({p.resizer}), boundaries {list(r.stage_boundaries())}; "
                   f"schedule {r.sampling.schedule}, guidance {r.sampling.guidance}; {r.dtype} on {r.device}.",
                   markup=False)
    for note in _device_notes(r.device):
        stdout().print(f"note: {note}", style="yellow", markup=False)


def _device_notes(device: str) -> list[str]:
    """Warnings about the requested device on this machine (only for an explicit cuda device)."""
    if not device.startswith("cuda"):
        return []
    import torch

    if not torch.cuda.is_available():
        return [f"device {device} is not available on this machine; the recipe will fail here (use device=cpu)."]
    index = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    return [] if index < count else [f"device {device} does not exist here ({count} CUDA devices)."]


@recipe_app.command("show")
def recipe_show(file: RecipeArg, overrides: OverridesArg = None, as_json: JsonOpt = False) -> None:
    """Print the fully resolved recipe (defaults filled in) as YAML, or JSON with --json."""
    resolved = rc.resolve_recipe(rc.load_recipe(file, overrides or []))
    if as_json:
        typer.echo(json.dumps(resolved, indent=2, ensure_ascii=False))
        return
    typer.echo(f"# resolved recipe; sha256 {rc.recipe_sha256(resolved)}")
    typer.echo(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True, width=100), nl=False)


@recipe_app.command("schema")
def recipe_schema(kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(rc.RECIPE_KINDS)}.")]) -> None:
    """Print the JSON schema of a recipe kind."""
    typer.echo(json.dumps(rc.recipe_schema(kind), indent=2, ensure_ascii=False))


@recipe_app.command("ls")
def recipe_ls() -> None:
    """List the recipes shipped with pyrawan."""
    table = Table("name", "kind", "base", "video", "schedule", "about")
    for name, path in rc.builtin_recipes().items():
        data = read_yaml(path)
        video, sampling = data.get("video") or {}, data.get("sampling") or {}
        size = "x".join(str(video.get(k, "?")) for k in ("frames", "height", "width"))
        table.add_row(name, str(data.get("kind")), str(data.get("base")), size, str(_schedule(data)), _about(path))
    stdout().print(table)


def _schedule(data: dict) -> object:
    """The schedule the recipe's output samples with: a distill recipe's student schedule, else ``sampling``'s."""
    section = (data.get("distill") if data.get("kind") == "distill" else data.get("sampling")) or {}
    return section.get("schedule")


def _about(path: Path) -> str:
    """The first sentence of a recipe's first comment line, without its ``# name:`` prefix."""
    first = next((line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#")), "#")
    return first.lstrip("# ").removeprefix(f"{path.stem}:").strip().split(". ")[0]


@recipe_app.command("cp")
def recipe_cp(
    name: Annotated[str, typer.Argument(help="Shipped recipe name (see `pyrawan recipe ls`).")],
    dest: Annotated[Path, typer.Argument(help="Destination file or folder.")],
    force: Annotated[bool, typer.Option("--force", help="Replace DEST if it exists.")] = False,
) -> None:
    """Copy a shipped recipe to edit it."""
    source = rc.builtin_recipe(name)
    target = dest / source.name if dest.is_dir() else dest
    if target.exists() and not force:
        raise InputError(f"{target} already exists; pass --force to replace it or choose another DEST.")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, source.read_bytes())
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as err:
        raise InputError(f"cannot write {target}: {err.strerror} ({err.filename}); choose a DEST whose folders are "
                         f"folders, not files.") from None
    stdout().print(f"wrote {target}; check your edits with `pyrawan recipe validate {target}`.", markup=False)


# ---- artifacts -----------------------------------------------------------------------------------

ArtifactArg = Annotated[Path, typer.Argument(help="Artifact folder (holds manifest.json).", show_default=False)]


@app.command("verify", rich_help_panel=INSPECT_PANEL)
def verify(art_dir: ArtifactArg, as_json: JsonOpt = False) -> None:
    """Recheck every file of an artifact against its manifest (exit 1 if any is missing or changed)."""
    findings = mf.check_artifact(art_dir)
    bad = [f for f in findings if f.fatal]
    if as_json:
        typer.echo(json.dumps({"ok": not bad, "findings": [asdict(f) for f in findings]}, indent=2))
    else:
        _print_findings(art_dir, findings, len(mf.read_manifest(art_dir)["outputs"]))
    if bad:
        raise typer.Exit(1)


def _print_findings(art_dir: Path, findings: list[mf.Finding], listed: int) -> None:
    """A table of differences, then one summary line."""
    if findings:
        table = Table("file", "problem", "detail")
        for f in findings:
            table.add_row(Text(f.path, overflow="fold"), Text(f.problem, style="red" if f.fatal else "yellow"),
                          Text(f.detail, overflow="fold"))
        stdout().print(table)
    bad = [f.path for f in findings if f.fatal]
    changed = [f for f in findings if f.fatal and f.problem != "symlink"]
    links = len(bad) - len(changed)
    if bad:
        parts = [f"{len(changed)} of {listed} files differ from its {mf.MANIFEST}"] * bool(changed) + \
            [f"{links} symbolic link{'s' * (links != 1)} leave{'s' * (links == 1)} the artifact or loop"] * bool(links)
        stderr().print(f"error: {art_dir} does not verify: {', '.join(parts)}: {', '.join(bad)}.", style="red",
                       markup=False)
    else:
        unlisted = len(findings)
        extra = f" ({unlisted} warning{'s' * (unlisted != 1)}: unlisted files or links inside)" if unlisted else ""
        stdout().print(f"ok: {art_dir}: all {listed} files match {mf.MANIFEST}{extra}.", markup=False)


@app.command("lineage", rich_help_panel=INSPECT_PANEL)
def lineage(art_dir: ArtifactArg, as_json: JsonOpt = False) -> None:
    """Show the chain of artifacts this one was made from."""
    nodes = mf.lineage(art_dir)
    if as_json:
        typer.echo(json.dumps(nodes, indent=2))
        return
    trees: list[Tree] = []
    for node in nodes:
        sha = (node["manifest_sha256"] or "")[:12]
        style = "green" if node["status"] in ("ok", "repeated") else "yellow"
        label = Text.assemble((f"{node['kind'] or '-'}", "bold"), "  ", (node["status"], style),
                              f"  {sha}" if sha else "", f"  {node['path']}")      # the path last: long ones fold
        label.overflow = "fold"
        trees.append(Tree(label) if node["parent"] is None else trees[node["parent"]].add(label))
    stdout().print(trees[0])


@app.command("env", rich_help_panel=INSPECT_PANEL)
def env(as_json: JsonOpt = False) -> None:
    """Versions, torch devices and offline settings (paste this into bug reports)."""
    info = {"versions": mf.versions(ENV_PACKAGES), "platform": platform.platform(), "torch": _torch_info(),
            "ffmpeg": _ffmpeg_info(), "environment": {k: os.environ.get(k) for k in OFFLINE_VARS},
            "git": mf.git_info()}
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    table = Table("item", "value", show_header=False)
    for section, values in info.items():
        for key, value in (values.items() if isinstance(values, dict) else [("", values)]):
            table.add_row(f"{section}.{key}" if key else section, Text("-" if value is None else str(value)))
    stdout().print(table)


def _torch_info() -> dict | None:
    """Torch build and CUDA devices, or None if torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    cuda = torch.cuda.is_available()
    return {"version": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": cuda,
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
            "bf16": torch.cuda.is_bf16_supported() if cuda else None, "threads": torch.get_num_threads()}


def _ffmpeg_info() -> dict | None:
    """FFmpeg libraries as bundled with PyAV, or None if PyAV is not installed."""
    try:
        import av
    except ImportError:
        return None
    codec = getattr(av, "library_versions", {}).get("libavcodec")
    return {"source": f"PyAV {av.__version__} wheel", "libavcodec": ".".join(map(str, codec)) if codec else None}


# ---- run commands --------------------------------------------------------------------------------
# Each follows `pyrawan CMD RECIPE [key.path=value ...] [-o OUT] [--overwrite]`: declare the
# parameters with RecipeArg, OverridesArg, OutOpt, OverwriteOpt, call run_options(...), then run
# the command module inside `with outputs.artifact_dir(opts.out, opts.overwrite) as tmp:` and finish
# with mf.write_manifest(tmp, ...). Register with rich_help_panel=RUN_PANEL.

@app.command("calibrate", rich_help_panel=RUN_PANEL)
def calibrate(
    data_dir: Annotated[Path, typer.Argument(help="Folder of videos and captions.", exists=True, file_okay=False)],
    overrides: OverridesArg = None,
    recipe: Annotated[Optional[str], typer.Option("-r", "--recipe", help="Calibrate recipe (file or name).")] = None,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Measure stage boundaries, spectra and latent statistics on a folder of videos and captions."""
    from pyrawan.commands import calibrate as cmd

    loaded = cmd.load_calibrate_recipe(data_dir, recipe, list(overrides or ()))
    cmd.run(loaded, out or Path("runs") / f"calibrate-{data_dir.resolve().name}", overwrite=overwrite)


# convert, sample and eval live in cli_run.py, finetune and distill in cli_train.py (imported here so
# they register on `app`).
from pyrawan import cli_run  # noqa: E402,F401
from pyrawan import cli_train  # noqa: E402,F401
from pyrawan import cli_toy  # noqa: E402,F401
from pyrawan import cli_ship  # noqa: E402,F401  (export, push)


def main() -> None:
    """Console entry point (``pyrawan = "pyrawan.cli:main"``); Ctrl-C outside a command also exits 130."""
    try:
        app(prog_name="pyrawan")
    except KeyboardInterrupt:
        stderr().print(f"\ninterrupted: {INTERRUPTED_DEFAULT}", style="yellow", markup=False)
        raise SystemExit(EXIT_INTERRUPTED) from None

