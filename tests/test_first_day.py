"""Issue 29 part B: Ctrl-C promises --resume only with a checkpoint; distill's data (prompts file, small
caches) is checked before anything loads; --reference folders are classified before sampling."""
from __future__ import annotations

import pytest

from pyrawan import recipe as rc
from pyrawan.errors import InputError


def test_ctrl_c_without_a_checkpoint_promises_no_resume(tmp_path):
    from pyrawan.train.run import interrupted

    text = str(interrupted(tmp_path / "ft", 7, 0))
    assert "--resume" not in text and "train.checkpoint.every = 0" in text and "metrics.jsonl" in text
    assert "the first comes at step 50" in str(interrupted(tmp_path / "ft", 7, 50))


def test_toy_finetune_checkpoints():
    assert rc.load_recipe("toy-finetune", []).train.checkpoint.every == 50


def test_distill_uses_every_item_of_a_small_cache_and_of_a_prompts_file(tmp_path):
    from pyrawan.commands.distill import prompt_items
    from pyrawan.train.source import PromptSource

    class Five:
        def __len__(self):
            return 5
    assert prompt_items(Five(), 32) == list(range(5))
    assert prompt_items(Five(), 2) == [0, 1, 2]
    assert prompt_items(PromptSource(tmp_path / "p.txt", ["a", "b"], []), 1) == [0, 1]


def test_data_prompts_is_checked_before_anything_loads(tmp_path):
    from pyrawan.commands.distill import check_recipe

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square moving left\n\na blue circle\n")
    ok = rc.load_recipe("toy-dmd-ptstar", [f"data.prompts={prompts}"])
    check_recipe(ok, tmp_path / "out", False, need_data=True)            # no error
    for extra, words in ((["data.cache=somewhere"], "both set"), (["distill.gan.weight=0.01"], "GAN term")):
        with pytest.raises(InputError, match=words):
            check_recipe(rc.load_recipe("toy-dmd-ptstar", [f"data.prompts={prompts}", *extra]), tmp_path / "o", False,
                         need_data=True)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(InputError, match="holds no prompt"):
        check_recipe(rc.load_recipe("toy-dmd-ptstar", [f"data.prompts={empty}"]), tmp_path / "o", False, need_data=True)


def test_finetune_refuses_a_too_small_dataset_before_encoding(tmp_path):
    from pyrawan.commands.finetune import check_recipe

    (tmp_path / "data").mkdir()
    for k in range(2):
        (tmp_path / "data" / f"clip{k}.mp4").write_bytes(b"x")
        (tmp_path / "data" / f"clip{k}.txt").write_text("a red square")
    recipe = rc.load_recipe("toy-finetune", [f"data.root={tmp_path / 'data'}", "train.validation.holdout=4"])
    with pytest.raises(InputError, match="has 2 item"):
        check_recipe(recipe, tmp_path / "out", False, need_data=True)


def test_reference_folder_that_is_neither_videos_nor_model_is_refused(tmp_path):
    from pyrawan.eval.quality_run import reference_is_samples

    assert reference_is_samples("toy") is False
    with pytest.raises(InputError, match="samples manifest"):
        reference_is_samples(str(tmp_path))
