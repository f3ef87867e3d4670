"""Shared test fixtures. Everything is offline: tiny models are built in code, nothing downloads."""
from __future__ import annotations

import os

# Set before anything imports huggingface_hub / transformers, so accidental hub access fails fast.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per core: each runs its tiny tensors on one thread (and so do the processes it starts),
    # so the workers do not spin against each other for the same two cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import typer.main  # noqa: E402
import typer.testing  # noqa: E402

_COMMANDS: dict[int, object] = {}


def _built_once(app):
    """typer builds the click command tree of ``app`` anew on every ``CliRunner.invoke`` (about 0.2 s for
    pyrawan's, most of an in-process CLI test); the tree depends only on the registered functions, so build it
    once per app. Monkeypatching a module function a command calls still works: the tree calls through."""
    key = id(app)
    if key not in _COMMANDS:
        _COMMANDS[key] = (app, typer.main.get_command(app))
    return _COMMANDS[key][1]


typer.testing._get_command = _built_once


@pytest.fixture(scope="session")
def tiny_components():
    """The ``tiny`` preset (seed 0), fp32 on CPU. Shared: tests must not modify it."""
    from pyrawan.models.presets import build_preset

    return build_preset("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory, tiny_components) -> Path:
    """A diffusers pipeline folder (``WanPipeline.save_pretrained``) of the tiny preset."""
    from pyrawan.models.denoiser import pipeline_for

    folder = tmp_path_factory.mktemp("tiny_pipeline")
    pipeline_for(tiny_components).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_text(tiny_components):
    """(cond, uncond) embeddings [2, 16, 32] for two prompts and two negative prompts."""
    from pyrawan.models.denoiser import encode_prompts

    return encode_prompts(tiny_components, ["a cat runs in the park", "A red car, 2 birds!"],
                          ["blurry", ""], max_sequence_length=16)


@pytest.fixture
def tiny_latents() -> torch.Tensor:
    """Normalised-latent-shaped noise [2, 16, 5, 8, 8] (the tiny recipe's full-resolution latent)."""
    return torch.randn(2, 16, 5, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread avoids thread hand-offs that dominate on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def transformer_batches(monkeypatch):
    """``batches(cls, argv)``: the batch size of every ``cls.forward`` call while ``pyrawan ARGV`` runs in
    this process (counts what a sampler really runs, not what its manifest says)."""
    from typer.testing import CliRunner

    from pyrawan.cli import app

    def batches(cls: type, argv: list) -> list[int]:
        seen, forward = [], cls.forward

        def counted(self, *args, **kwargs):
            seen.append(int((args[0] if args else kwargs["hidden_states"]).shape[0]))
            return forward(self, *args, **kwargs)

        monkeypatch.setattr(cls, "forward", counted)
        result = CliRunner().invoke(app, [str(a) for a in argv])
        monkeypatch.setattr(cls, "forward", forward)
        assert result.exit_code == 0, result.output
        return seen

    return batches
