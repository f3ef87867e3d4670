"""Readable ``--help`` for every command: one example each, literal ``[default: ...]`` text, no type noise.

Typer renders help with rich markup, which swallows ``[default: ...]`` (it looks like a style tag)
and prints ``<bool>`` beside every flag; ``polish_help`` fixes both on the click command tree once,
when the root group is built, so commands defined in any module get it.
"""
from __future__ import annotations

from typing import Any

# One example per command, shown at the end of its --help (keyed by the command path after `pyrawan`).
EXAMPLES = {
    "calibrate": "pyrawan calibrate data/toy -o runs/calibration",
    "convert": "pyrawan convert toy --calibration runs/calibration -o runs/pyramid",
    "finetune": "pyrawan finetune toy-finetune base=runs/pyramid data.root=data/toy -o runs/finetuned",
    "distill": "pyrawan distill toy-dmd-ptstar base=runs/finetuned data.root=data/toy -o runs/dmd",
    "sample": "pyrawan sample --model runs/finetuned -p 'a red square moving left' -p 'a blue circle moving up' -o runs/samples",
    "demo": "pyrawan demo --quick -o runs/demo-quick",
    "verify": "pyrawan verify runs/pyramid",
    "lineage": "pyrawan lineage runs/finetuned",
    "env": "pyrawan env --json",
    "recipe validate": "pyrawan recipe validate toy sampling.schedule=2-2-1",
    "recipe show": "pyrawan recipe show toy --json",
    "recipe schema": "pyrawan recipe schema finetune",
    "recipe ls": "pyrawan recipe ls",
    "recipe cp": "pyrawan recipe cp toy my-recipe.yaml",
    "eval flops": "pyrawan eval flops toy --schedules 0-0-50,20-20-10",
    "eval latency": "pyrawan eval latency --model tiny-random --device cpu --repeats 3",
    "toy make-dataset": "pyrawan toy make-dataset data/toy --n 64",
    "toy bench": "pyrawan toy bench runs/samples --reference data/toy",
}


# The real default of -o/--out where the shared option's text ("runs/KIND-RECIPE") does not say it.
OUT_DEFAULTS = {"calibrate": "runs/calibrate-DATA_DIR", "demo": "runs/demo"}


def polish_help(group: Any, prefix: str = "") -> None:
    """Readable --help for ``group`` and every command below it: an example, literal ``[default: ...]``
    and ``[...]`` text (not rich markup), and no ``<bool>`` type column for flags (``--help`` included)."""
    _polish_params(group, prefix.strip())
    for name, command in (getattr(group, "commands", None) or {}).items():
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):
            polish_help(command, f"{path} ")
            continue
        if command.help and path in EXAMPLES and "Example:" not in command.help:
            command.help = f"{command.help.rstrip()}\n\nExample: {EXAMPLES[path]}"
        _polish_params(command, path)


def _polish_params(command: Any, path: str) -> None:
    _quiet_help_flag(command)
    for param in command.params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        if getattr(param, "param_type_name", "") == "argument":
            _plain_usage_name(param)
        if not getattr(param, "help", None) or "\\[" in param.help:
            continue
        if param.name == "out" and path in OUT_DEFAULTS:
            param.help = param.help.replace("runs/KIND-RECIPE", OUT_DEFAULTS[path])
        param.help = param.help.replace("[", "\\[")


def _plain_usage_name(argument: Any) -> None:
    """Usage lines show ``RECIPE [OVERRIDES]...`` (click's convention), not typer's ``{recipe} [overrides]...``."""
    if argument.metavar is None:
        argument.metavar = argument.name.upper()

    def usage_name() -> str:
        name = argument.metavar if argument.required else f"[{argument.metavar}]"
        return name + ("..." if argument.nargs != 1 else "")
    argument._usage_display_name = usage_name


def _quiet_help_flag(command: Any) -> None:
    """Show ``--help`` without a type."""
    original = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = original(ctx)
        if option is not None:
            option.metavar = ""
        return option
    command.get_help_option = get_help_option
