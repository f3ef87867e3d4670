"""Model files checked like recipes (pyramid.json, components.json, transformer config.json against the
weights' header), nothing non-finite published, and the recipe reading rules that close the trust boundary:
strict YAML, every value check in ``recipe validate``, prompts files split only at newlines, bad data named."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pyrawan.data.config import Data
from pyrawan.data.datasets import apply_policy, probe_dataset, scan_dataset
from pyrawan.data.prompts import split_prompts
from pyrawan.errors import InputError, NonFiniteError
from pyrawan.models.model_files import check_transformer_config, check_transformer_folder, parse_components
from pyrawan.models.pyramid_spec import PyramidSpec, define_pyramid
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.sampler import sample_fewstep, sample_multistep
from pyrawan.recipe import load_recipe
from synthetic import make_dataset, smooth_video, write_clip

WEIGHTS = "diffusion_pytorch_model.safetensors"


def edited(data: dict, key: str, value) -> dict:
    """A deep copy of ``data`` with the dotted ``key`` (list indices as numbers) set to ``value``."""
    data = json.loads(json.dumps(data))
    *path, last = key.split(".")
    node = data
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[int(last) if isinstance(node, list) else last] = value
    return data


# ---- pyramid.json --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spec_data() -> dict:
    return define_pyramid(load_recipe("tiny"), None).to_dict()


@pytest.mark.parametrize("key, value, expect", [
    ("sampling.guidance", float("inf"), "sampling.guidance = Infinity: Input should be a finite number"),
    ("sampling.guidance", 1e9, "sampling.guidance"),
    ("sampling.shift", float("nan"), "sampling.shift = NaN: must be a finite number"),
    ("sampling.shift", [1.0, 2.0], "sampling.shift = [1.0, 2.0] has 2 values but the pyramid has 3 stages"),
    ("sampling.fewstep_levels", [[1.0, 0.5], [1.5, 0.5], [1.0, -0.2]], "every level rho must lie in [0, 1]"),
    ("sampling.fewstep_levels", [[1.0, float("inf")], [1.0, 0.5], [1.0, 0.5]], "sampling.fewstep_levels[0][1] = Infinity"),
    ("sampling.schedule", "2-2", "sampling.schedule = '2-2' has 2 stages but the model has 3"),
    ("stage_latents", [[99, 1, 1], [3, 4, 4], [2, 2, 2]], "stage_latents = [[99, 1, 1], [3, 4, 4], [2, 2, 2]] but"),
    ("boundaries", [0.9, 0.2], "boundaries = [0.9, 0.2] must be strictly increasing"),
    ("boundaries", [0.5], "boundaries has 1 values but a 3-stage pyramid needs 2"),
    ("video.height", 72, "video height = 72 cannot form a 3-stage pyramid"),
    ("video.frames", 10**6, "video.frames = 1000000: Input should be less than or equal to 1025"),
    ("resizer", "lanczos", "resizer = \"lanczos\""),
    ("num_stages", 9, "num_stages = 9"),
    ("natural_levels.0.sigma_c", [float("nan"), 0.0], "natural_levels[0].sigma_c[0] = NaN"),
])
def test_pyramid_json_is_checked_like_a_recipe(spec_data, key, value, expect):
    with pytest.raises(InputError) as err:
        PyramidSpec.parse(edited(spec_data, key, value), "m/pyramid.json")
    text = str(err.value)
    assert text.startswith("m/pyramid.json is not a valid") and expect in text and "re-create the model" in text


def test_distilled_levels_are_checked_and_every_shipped_recipe_makes_a_valid_spec(spec_data):
    distilled = {"method": "dmd", "variant": "ot", "schedule": "2-2-2", "levels": [[1.0, 2.0]], "teacher": "tiny",
                 "teacher_guidance": 3.0, "steps": 4}
    with pytest.raises(InputError, match=r"distilled.levels = \[\[1.0, 2.0\]\]: every level"):
        PyramidSpec.parse({**spec_data, "distilled": distilled}, "p")
    for name in ("tiny", "toy", "toy-ppf-finetune", "wan1.3b", "wan1.3b-dmd-ptstar"):
        spec = define_pyramid(load_recipe(name), None)
        assert PyramidSpec.parse(json.loads(spec.to_json()), name) == spec


# ---- components.json -----------------------------------------------------------------------------

GOOD_COMPONENTS = {"schema": "pyrawan.components/1", "components": {
    "tokenizer": {"preset": "tiny", "seed": 0, "sha256": "a" * 64},
    "text_encoder": {"repo_id": "Wan-AI/x", "revision": "abc", "subfolder": "text_encoder", "files": {"f": "b" * 64}},
    "vae": {"path": "/models/wan", "subfolder": "vae", "files": {"vae/c.json": "c" * 64}},
    "transformer": {"saved": "transformer"}}}


@pytest.mark.parametrize("key, value, expect", [
    ("components.vae", {"sha256": "x"}, "components.vae = {\"sha256\": \"x\"}: not a component reference"),
    ("components.tokenizer.seed", -1, "components.tokenizer.seed = -1"),
    ("components.tokenizer.preset", "huge", "components.tokenizer.preset = \"huge\""),
    ("components.tokenizer.sha256", "0" * 63, "components.tokenizer.sha256"),
    ("components.transformer.saved", "../elsewhere", "'../elsewhere' is not a plain subfolder name"),
    ("components.vae.subfolder", "/etc", "'/etc' is not a plain subfolder name"),
    ("components.text_encoder.repo_id", "not a repo", "components.text_encoder.repo_id"),
    ("components.vae.files", {}, "components.vae.files"),
    ("schema", "other/2", "schema = \"other/2\""),
])
def test_components_json_is_typed(key, value, expect):
    assert parse_components(GOOD_COMPONENTS, "c")["vae"]["subfolder"] == "vae"
    with pytest.raises(InputError) as err:
        parse_components(edited(GOOD_COMPONENTS, key, value), "m/components.json")
    assert str(err.value).startswith("m/components.json is not a valid pyrawan.components/1 file") and expect in str(err.value)


# ---- the transformer's config.json against its weights -------------------------------------------

@pytest.fixture(scope="module")
def transformer_dir(tmp_path_factory, tiny_components) -> Path:
    folder = tmp_path_factory.mktemp("transformer")
    tiny_components.transformer.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.mark.parametrize("key, value, expect", [
    ("num_attention_heads", 0, "num_attention_heads = 0: Input should be greater than or equal to 1"),
    ("num_layers", 100000, "num_layers = 100000: Input should be less than or equal to 1000"),
    ("attention_head_dim", 7, "attention_head_dim = 7: must be even"),
    ("eps", float("nan"), "eps = NaN"),
    ("patch_size", [1, 2], "patch_size"),
    ("in_channels", "16x", "in_channels"),
])
def test_transformer_config_ranges(transformer_dir, key, value, expect):
    config = json.loads((transformer_dir / "config.json").read_text())
    assert check_transformer_config(config, "t").inner == 32
    with pytest.raises(InputError) as err:
        check_transformer_config({**config, key: value}, "m/transformer/config.json")
    assert "m/transformer/config.json is not a valid transformer config" in str(err.value) and expect in str(err.value)


@pytest.mark.parametrize("key, value, expect", [
    ("num_layers", 3, "num_layers = 3 but the weights hold 2 blocks"),
    ("num_attention_heads", 4, "blocks.0.attn1.to_q.weight is [32, 32] in the weights but the config"),
    ("ffn_dim", 65, "blocks.0.ffn.net.0.proj.weight is [64, 32]"),
    ("text_dim", 48, "condition_embedder.text_embedder.linear_1.weight is [32, 32]"),
    ("patch_size", [1, 1, 1], "patch_embedding.weight is [32, 16, 1, 2, 2]"),
])
def test_transformer_config_must_fit_the_weights_header(tmp_path, transformer_dir, key, value, expect):
    folder = tmp_path / "transformer"
    shutil.copytree(transformer_dir, folder)
    check_transformer_folder(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, key: value}))
    with pytest.raises(InputError) as err:
        check_transformer_folder(folder)
    assert "does not fit the weights in" in str(err.value) and expect in str(err.value)


def test_a_bad_artifact_config_fails_before_any_model_is_built(tmp_path, tiny_components, monkeypatch):
    from pyrawan.models import artifact
    from pyrawan.models.artifact import load_model, save_model

    save_model(tmp_path / "art", tiny_components, define_pyramid(load_recipe("tiny"), None))
    config = tmp_path / "art" / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_layers": 100000}))

    def built(*args, **kwargs):
        raise AssertionError("a model was built before the config was checked")
    monkeypatch.setattr(artifact, "load_component", built)
    monkeypatch.setattr(artifact, "build_preset", built)
    with pytest.raises(InputError, match="num_layers = 100000"):
        load_model(tmp_path / "art")


# ---- nothing non-finite is published -------------------------------------------------------------

def nan_at(call: int):
    """A velocity that returns NaN for sample 1 from its ``call``-th evaluation on."""
    calls = []

    def velocity(x, sigma):
        calls.append(1)
        v = torch.zeros_like(x)
        if len(calls) >= call:
            v[1] = float("nan")
        return v
    return velocity


def test_samplers_stop_at_the_first_non_finite_step():
    pyramid = PyramidConfig(num_stages=3, boundaries=(0.5, 0.9))
    noise = torch.randn(2, 16, 2, 2, 2)
    with pytest.raises(NonFiniteError) as err:
        sample_multistep(nan_at(3), noise, pyramid, steps=(2, 2, 2))
    assert err.value.samples == [1] and err.value.where == "stage 2 of 3 (coarsest first), step 1"
    assert err.value.exit_code == 1 and "prompt index 1" in str(err.value)
    with pytest.raises(NonFiniteError) as err:
        sample_fewstep(nan_at(1), noise, pyramid, [[1.0], [1.0], [1.0]])
    assert err.value.where == "stage 1 of 3 (coarsest first), step 1"
    assert err.value.for_prompts([7, 9]).samples == [9]


@pytest.fixture
def nan_pipeline(tmp_path, tiny_pipeline_dir) -> Path:
    folder = tmp_path / "nan-model"
    shutil.copytree(tiny_pipeline_dir, folder)
    weights = folder / "transformer" / WEIGHTS
    state = load_file(weights)
    state["proj_out.weight"][:] = float("nan")
    save_file(state, weights, metadata={"format": "pt"})
    return folder


def test_sample_refuses_to_publish_nan_latents(tmp_path, nan_pipeline, one_thread):
    from pyrawan.commands.sample import SampleSettings, partial_folder, run

    out = tmp_path / "videos"
    settings = SampleSettings(prompts=["a", "b", "c"], model=str(nan_pipeline), schedule="2", frames=5, height=32,
                              width=32, batch_size=2, progress=False)
    with pytest.raises(NonFiniteError) as err:
        run(settings, out)
    assert err.value.samples == [0, 1] and "stage 1 of 1 (coarsest first), step 1" in str(err.value)
    assert not out.exists() and not partial_folder(out).exists()


def test_a_decode_to_nan_is_refused_too(tiny_components, monkeypatch, one_thread):
    from pyrawan.models import generate
    from pyrawan.models.artifact import LoadedModel

    model = LoadedModel(tiny_components, None, None)
    plan = generate.make_plan(generate.SampleSettings(prompts=["a"], model="tiny", schedule="1", frames=5,
                                                      height=32, width=32), model)
    monkeypatch.setattr(generate, "decode_latents", lambda comps, z, chunk=None: torch.full((len(z), 5, 3, 32, 32), float("nan")))
    with pytest.raises(NonFiniteError) as err:
        next(generate.generate_batches(model, plan, ["a", "b"], [0, 1], batch_size=2))
    assert str(err.value).startswith("the decoded video of prompt index 0, 1 became non-finite (NaN or Inf) at the VAE")
    assert err.value.for_prompts([2, 3]).samples == [2, 3]


# ---- recipes: strict YAML and every value check in validation ------------------------------------

@pytest.mark.parametrize("override, expect", [
    ("seed=1:00", "seed = \"1:00\" has the wrong type"),
    ("sampling.negative_prompt=!!binary aGVsbG8=", "the tag !!binary is not allowed in recipes"),
    ("pyramid.keep_time=yes", "pyramid.keep_time = \"yes\" has the wrong type"),
    ("pyramid.keep_time=off", "pyramid.keep_time = \"off\""),
    ("sampling.negative_prompt=!!timestamp 2001-12-14", "!!timestamp is not allowed"),
])
def test_recipes_read_yaml_1_2_core_types_only(override, expect):
    with pytest.raises(InputError) as err:
        load_recipe("tiny", [override])
    assert expect in str(err.value)


def test_yaml_1_2_numbers():
    r = load_recipe("tiny-finetune", ["seed=017", "sampling.guidance=1e0", "train.optimizer.lr=1e-4",
                                      "sampling.negative_prompt=2001-12-14", "pyramid.keep_time=false"])
    assert r.seed == 17 and r.sampling.guidance == 1.0 and r.train.optimizer.lr == 1e-4
    assert r.sampling.negative_prompt == "2001-12-14" and r.pyramid.keep_time is False
    assert load_recipe("tiny", ["seed=0x10"]).seed == 16


@pytest.mark.parametrize("recipe, overrides, expect", [
    ("tiny-finetune", ["train.optimizer.betas=[0.9, 1.0]"], r"train.optimizer.betas\[1\] = 1.0: Input should be less than 1"),
    ("tiny-dmd", ["train.grad_accum=2"], "distill runs one micro-step per iteration"),
    ("tiny-dmd", ["train.engine=deepspeed", "train.zero_stage=3", "train.ema.enabled=false"],
     "train.zero_stage = 3 is not supported by distill"),
    ("tiny-finetune", ["train.lora.enabled=true", "train.lora.target_modules=[to_q, nothing]"],
     r"train.lora.target_modules names no layer of a Wan2.1 transformer: \['nothing'\]"),
])
def test_recipe_validation_runs_the_checks_the_run_makes(recipe, overrides, expect):
    with pytest.raises(InputError, match=expect):
        load_recipe(recipe, overrides)


def test_lora_targets_by_suffix_or_any_block():
    recipe = load_recipe("tiny-finetune", ["train.lora.enabled=true",
                                           "train.lora.target_modules=[blocks.7.attn2.to_k, proj_out, ffn.net.2]"])
    assert recipe.train.lora.target_modules[0] == "blocks.7.attn2.to_k"


# ---- prompts files and bad data ------------------------------------------------------------------

@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85", "\v", "\f", "\x00", "\r"])
def test_prompts_split_only_at_newlines(char):
    assert split_prompts("one\r\n\n  two \t\nthree", "p") == ["one", "two", "three"]
    with pytest.raises(InputError, match=f"p line 2: holds U\\+{ord(char):04X}"):
        split_prompts(f"first\na red cat{char}a blue dog\n", "p")


def test_skip_names_duplicates_and_tiny_videos_and_fail_refuses_them(tmp_path, capsys):
    clips = [smooth_video(0, frames=9, size=32), smooth_video(1, frames=9, size=32)]
    root = make_dataset(tmp_path / "data", "metadata.csv", clips, ["a red ball", "a blue sky"])
    write_clip(root / "videos" / "dot.mp4", smooth_video(0, frames=9, size=2))
    rows = (root / "metadata.csv").read_text() + "videos/clip0.mp4,a red ball\nvideos/dot.mp4,a dot\n"
    (root / "metadata.csv").write_text(rows)
    ds = probe_dataset(scan_dataset(root, Data()), frames=9, fps=16, size=(32, 32))
    assert ds.bad_counts() == {"duplicate": 1, "too small": 1} and len(ds.records) == 2
    with pytest.raises(InputError, match="line 4 .videos/clip0.mp4.: duplicate .same video and caption as metadata.csv line 2"):
        apply_policy(ds, "fail")
    apply_policy(ds, "skip")
    apply_policy(ds, "skip")
    warned = capsys.readouterr().err
    assert warned.count("leaves out 2 of 4 entries") == 1 and "videos/dot.mp4): too small (2x2 pixels" in " ".join(warned.split())


def test_eval_latency_without_a_model_is_refused_on_a_cpu(monkeypatch):
    from pyrawan.commands import evaluate

    monkeypatch.setattr(evaluate, "build_transformer", lambda *a, **k: pytest.fail("built a model"))
    with pytest.raises(InputError, match="give --model explicitly: --model tiny-random"):
        evaluate.run_latency(None, None, None, device="cpu")


# ---- crafted model artifacts for the corpus (tests/corpus/cases.yaml, model_files) ---------------

def model_artifact(out: Path, components) -> Path:
    """A finished tiny model artifact (what `pyrawan convert tiny` writes), made without a convert run."""
    from pyrawan.manifest import write_manifest
    from pyrawan.models.artifact import save_model
    from pyrawan.outputs import artifact_dir
    from pyrawan.recipe import resolve_recipe

    recipe = load_recipe("tiny")
    with artifact_dir(out) as tmp:
        save_model(tmp, components, define_pyramid(recipe, None))
        write_manifest(tmp, "convert", resolve_recipe(recipe), command=["pyrawan", "convert", "tiny"])
    return out


def craft(source: Path, out: Path, file: str, values: dict) -> Path:
    """A copy of the artifact ``source`` with ``values`` (dotted keys) set in its JSON ``file``, or with NaN
    weights (``file: nan-weights``), and its manifest rehashed: it still passes `pyrawan verify`."""
    from pyrawan.manifest import read_manifest, write_manifest

    shutil.copytree(source, out)
    if file == "nan-weights":
        weights = out / "transformer" / WEIGHTS
        state = load_file(weights)
        state["proj_out.weight"][:] = float("nan")
        save_file(state, weights, metadata={"format": "pt"})
    else:
        data = json.loads((out / file).read_text())
        for key, value in values.items():
            data = edited(data, key, value)
        (out / file).write_text(json.dumps(data))
    old = read_manifest(out)
    write_manifest(out, old["kind"], old["recipe"]["resolved"], command=old["command"])
    return out
