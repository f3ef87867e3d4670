"""Stage geometry, sigma <-> natural maps, boundaries and schedule parsing."""
import pytest
import torch

from pyrawan.errors import InputError
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.geometry import check_sizes, stage_shapes
from pyrawan.pyramid.schedule import (
    jump_level,
    natural_to_sigma,
    parse_schedule,
    rho_grid,
    sigma_to_natural,
    stage_levels,
)


def test_paper_stage_shapes():
    assert stage_shapes((21, 56, 104), 3) == [(21, 56, 104), (11, 28, 52), (6, 14, 26)]
    assert stage_shapes((21, 56, 104), 3, keep_time=True) == [(21, 56, 104), (21, 28, 52), (21, 14, 26)]


@pytest.mark.parametrize("shape,dim,stage,near", [
    ((21, 60, 104), "height", 2, "56 or 64"),
    ((20, 56, 104), "frames", 1, "17 or 21"),
    ((21, 56, 100), "width", 2, "96 or 104"),
])
def test_shapes_that_do_not_divide_name_dimension_stage_and_nearest_sizes(shape, dim, stage, near):
    with pytest.raises(InputError) as err:
        stage_shapes(shape, 3)
    msg = str(err.value)
    assert f"{dim} = " in msg and f"stage {stage}" in msg and near in msg


def test_pixel_sizes_are_checked_with_the_vae_factors():
    check_sizes({"frames": 81, "height": 448, "width": 832}, 3, frame_unit=4, space_unit=8)
    with pytest.raises(InputError, match="height = 480.*448 or 512"):
        check_sizes({"frames": 81, "height": 480, "width": 832}, 3, frame_unit=4, space_unit=8, what="pixel")
    with pytest.raises(InputError, match="frames = 79"):
        check_sizes({"frames": 79, "height": 448, "width": 832}, 3, frame_unit=4, space_unit=8, what="pixel")


@pytest.mark.parametrize("keep_time", [False, True])
def test_natural_map_inverts_and_commutes_with_the_jump(keep_time):
    sigma = torch.linspace(0.01, 0.99, 17, dtype=torch.float64)
    for stage in (1, 2):
        for b in sigma:
            nat = sigma_to_natural(b, stage, 5, keep_time)
            assert torch.allclose(natural_to_sigma(nat, stage, keep_time), b.expand(5), atol=1e-12)
            m = torch.tensor([4.0] + [4.0 if keep_time else 8.0] * 4, dtype=torch.float64)
            assert torch.allclose(jump_level(nat, m), sigma_to_natural(b, stage - 1, 5, keep_time), atol=1e-12)
    assert jump_level(0.5, 4) == pytest.approx(2 * 0.5 / 1.5)  # Pyramid Flow's 2s / (1 + s)


def test_stage_levels_span_the_pyramid():
    b = (0.3, 0.7)
    sc0, sn0 = stage_levels(b, 0, 5)
    _, sn2 = stage_levels(b, 2, 2)
    assert torch.all(sc0 == 0) and torch.all(sn2 == 1)
    assert torch.allclose(sn0, torch.full((5,), 0.3, dtype=torch.float64))   # stage 0 is natural already
    _, top = stage_levels(b, 1, 3, top=True)
    assert torch.all(top == 1)
    sc1, sn1 = stage_levels(b, 1, 3)
    assert torch.all(sc1 < sn1) and sc1[0] > sc1[1]  # frame 0 (m = 4) is amplified less than later frames


@pytest.mark.parametrize("b,match", [((0.5,), "needs 2"), ((0.6, 0.4), "strictly increasing"), ((0.0, 0.5), "strictly increasing"), ((0.5, 1.0), "strictly increasing")])
def test_bad_boundaries(b, match):
    with pytest.raises(InputError, match=match):
        PyramidConfig(num_stages=3, boundaries=b)


def test_schedules():
    assert parse_schedule("20-20-10", 3) == (20, 20, 10)
    assert parse_schedule("0-0-50", 3) == (0, 0, 50)
    assert parse_schedule("50") == (50,)
    for text, match in [("2-0-1", "skips a stage"), ("20-20", "has 2 stages but the model has 3"),
                        ("0-0-0", "no steps"), ("2x2", "not a schedule")]:
        with pytest.raises(InputError, match=match):
            parse_schedule(text, 3)


def test_rho_grid_is_wan_shift():
    grid = rho_grid(5, 3.0)
    expected = torch.tensor([1.0, 0.9231, 0.8182, 0.6667, 0.4286, 0.0], dtype=torch.float64)
    assert torch.allclose(grid, expected, atol=1e-4)


def test_config_round_trips_through_a_dict():
    cfg = PyramidConfig(num_stages=3, boundaries=(0.2, 0.5), resizer="db4", keep_time=True, extra={"stage_data": 2})
    again = PyramidConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.extra == {"stage_data": 2}
    assert PyramidConfig(num_stages=3).boundaries == pytest.approx((1 / 3, 2 / 3), abs=1e-5)


def test_levels_and_boundaries_on_numbers_worked_by_hand():
    """Defaults (no keep_time: frame 0 m = 4, later frames m = 8), exact float64 arithmetic, and the split
    recipes default to: Pyramid Flow's, in global sigma (S = 3: m = 8 gives 0.586, 0.941; m = 4 gives 0.5,
    0.889; PPF, m = 1, the uniform split), rounded to 6 digits."""
    from pyrawan.pyramid.schedule import (amplitude_gain, default_boundaries, pyramid_flow_boundaries,
                                          recipe_default_boundaries)

    r8 = 8 ** 0.5
    assert amplitude_gain(1, 2).tolist() == pytest.approx([2.0, r8], rel=1e-15)
    assert sigma_to_natural(0.5, 1, 2).tolist() == pytest.approx([1 / 3, 1 / (1 + r8)], rel=1e-15)
    assert natural_to_sigma([1 / 3, 1 / (1 + r8)], 1).tolist() == pytest.approx([0.5, 0.5], rel=1e-15)
    assert sigma_to_natural(0.3, 0, 3).tolist() == [0.3] * 3                       # stage 0: natural = global
    assert natural_to_sigma([0.3, 0.3], 0).tolist() == [0.3, 0.3]
    assert float(jump_level(0.3, 4)) == pytest.approx(0.6 / 1.3, rel=1e-15)
    assert float(jump_level(0.5, 8)) == pytest.approx(r8 * 0.5 / (1 + (r8 - 1) * 0.5), rel=1e-15)
    _, sn = stage_levels((0.3, 0.7), 1, 3, keep_time=True)                    # keep_time: every frame m = 4
    assert sn.tolist() == pytest.approx([0.7 / (0.3 * 2 + 0.7)] * 3, rel=1e-15)
    assert rho_grid(2).tolist() == [1.0, 0.5, 0.0]                               # default shift 1
    assert default_boundaries(3) == (0.333333, 0.666667)
    assert recipe_default_boundaries(3) == (0.585786, 0.941176) == pyramid_flow_boundaries(3)
    assert recipe_default_boundaries(3, keep_time=True) == (0.5, 0.888889)
    assert recipe_default_boundaries(3, kind="ppf") == (0.333333, 0.666667)
    assert recipe_default_boundaries(2) == (0.738796,) and pyramid_flow_boundaries(4, m=4.0) == (0.4, 0.8, 0.96)


def test_schedule_and_boundary_messages_and_the_recipe_forms_of_a_schedule():
    from pyrawan.pyramid.schedule import check_boundaries, schedule_text

    with pytest.raises(InputError) as err:
        check_boundaries((0.5,), 3)
    assert str(err.value) == ("pyramid.boundaries has 1 values but a 3-stage pyramid needs 2 (the inner boundaries "
                              "b_1 .. b_2 in global sigma, finest first), e.g. [0.3333, 0.6667].")
    with pytest.raises(InputError, match=r"^schedule = '2-0-1' skips a stage"):
        parse_schedule("2-0-1", 3)
    with pytest.raises(InputError, match=r"^schedule = '20-20' has 2 stages but the model has 3; .*\(e\.g\. '0-0-50' for"):
        parse_schedule([20, 20], 3)
    assert parse_schedule([20, 20, 10], 3) == (20, 20, 10) and parse_schedule((0, 4)) == (0, 4)
    assert schedule_text(50) == "50" and schedule_text([20, 20, 10]) == "20-20-10" and schedule_text((2, 1)) == "2-1"
    assert schedule_text(True) is True and schedule_text([1.5, 2]) == [1.5, 2] and schedule_text("2-2-1") == "2-2-1"


@pytest.mark.parametrize("call,message", [
    # the failing stage is the first one whose size is not whole (frames: 1 + k, k halves per stage)
    (dict(sizes={"frames": 7}, num_stages=3), "latent frames = 7 cannot form a 3-stage pyramid: it fails at stage 2 "
     "(stage 0 = full resolution). Frames must be 1 + a multiple of 4; the nearest valid values are 5 or 9."),
    (dict(sizes={"frames": 3}, num_stages=3), "fails at stage 2 (stage 0 = full resolution). Frames must be 1 + a "
     "multiple of 4; the nearest valid values are 1 or 5."),
    (dict(sizes={"frames": 11}, num_stages=4), "fails at stage 2 (stage 0 = full resolution). Frames must be 1 + a "
     "multiple of 8; the nearest valid values are 9 or 17."),
    (dict(sizes={"frames": 13}, num_stages=4), "fails at stage 3"),
    (dict(sizes={"frames": 21}, num_stages=5), "fails at stage 3"),
    (dict(sizes={"frames": 2}, num_stages=3), "the nearest valid values are 1 or 5."),
    (dict(sizes={"frames": 0}, num_stages=3), "fails at stage 0"),
    (dict(sizes={"frames": 4}, num_stages=3), "latent frames = 4 cannot"),          # default keep_time: False
    (dict(sizes={"frames": 78}, num_stages=3, frame_unit=4, space_unit=8, what="pixel"),
     "pixel frames = 78 cannot form a 3-stage pyramid: it fails at stage 0 (stage 0 = full resolution). Frames must "
     "be 1 + a multiple of 16; the nearest valid values are 65 or 81."),
    (dict(sizes={"frames": 79}, num_stages=3, frame_unit=4, space_unit=8), "fails at stage 0"),
    (dict(sizes={"frames": 85}, num_stages=3, frame_unit=4, space_unit=8), "fails at stage 1"),
    (dict(sizes={"frames": 6}, num_stages=3, keep_time=True, frame_unit=4), "fails at stage 0 (stage 0 = full "
     "resolution). Frames must be 1 + a multiple of 4; the nearest valid values are 5 or 9."),
    # height/width: a multiple of the patch at the coarsest stage, and nothing below the smallest
    (dict(sizes={"height": 3}, num_stages=3), "latent height = 3 cannot form a 3-stage pyramid: it fails at stage 0 "
     "(stage 0 = full resolution). Height must be a multiple of 8; the nearest valid values are 8."),
    (dict(sizes={"height": 0}, num_stages=3), "fails at stage 0 (stage 0 = full resolution). Height must be a "
     "multiple of 8; the nearest valid values are 8."),
    (dict(sizes={"width": 12}, num_stages=3), "fails at stage 2 (stage 0 = full resolution). Width must be a multiple "
     "of 8; the nearest valid values are 8 or 16."),
    (dict(sizes={"height": 6}, num_stages=3, patch=(1, 2)), "fails at stage 2 (stage 0 = full resolution). Height "
     "must be a multiple of 4"),
    (dict(sizes={"width": 12}, num_stages=3, patch=(1, 4)), "fails at stage 1 (stage 0 = full resolution). Width "
     "must be a multiple of 16"),
    (dict(sizes={"height": 24}, num_stages=4), "fails at stage 3 (stage 0 = full resolution). Height must be a "
     "multiple of 16; the nearest valid values are 16 or 32."),
    (dict(sizes={"height": 36}, num_stages=3, space_unit=8), "fails at stage 0"),
    (dict(sizes={"height": 48}, num_stages=3, space_unit=8), "fails at stage 1"),
])
def test_size_messages_name_the_first_failing_stage_the_form_and_the_nearest_sizes(call, message):
    with pytest.raises(InputError) as err:
        check_sizes(**call)
    assert message in str(err.value)
    if message.startswith(("latent", "pixel")):
        assert str(err.value).startswith(message)


@pytest.mark.parametrize("call", [
    dict(sizes={"frames": 1, "height": 8, "width": 8}, num_stages=3),
    dict(sizes={"frames": 4}, num_stages=3, keep_time=True),
    dict(sizes={"frames": 9, "height": 16, "width": 16}, num_stages=4),        # 2**3, not 2 * 3
    dict(sizes={"height": 4, "width": 8}, num_stages=3, patch=(1, 2)),
    dict(sizes={"frames": 81, "height": 448, "width": 832}, num_stages=3, frame_unit=4, space_unit=8),
])
def test_sizes_that_form_the_pyramid_pass(call):
    check_sizes(**call)


def test_shapes_keep_time_and_patch_reach_every_stage():
    from pyrawan.pyramid.geometry import (block_sizes, coarse_frame_index, coarser_shape, expand_to_fine,
                                          pixel_to_latent, size_rule)

    assert coarser_shape((5, 4, 4)) == (3, 2, 2) and coarser_shape((5, 4, 4), keep_time=True) == (5, 2, 2)
    assert stage_shapes((4, 8, 8), 3, keep_time=True) == [(4, 8, 8), (4, 4, 4), (4, 2, 2)]
    assert stage_shapes((5, 4, 4), 3, patch=(1, 1)) == [(5, 4, 4), (3, 2, 2), (2, 1, 1)]
    assert block_sizes(3).tolist() == [4.0, 8.0, 8.0] and block_sizes(3, keep_time=True).tolist() == [4.0] * 3
    assert coarse_frame_index(5).tolist() == [0, 1, 1, 2, 2] and coarse_frame_index(3, keep_time=True).tolist() == [0, 1, 2]
    assert expand_to_fine(torch.tensor([7.0, 8.0, 9.0]), 5).tolist() == [7.0, 8.0, 8.0, 9.0, 9.0]
    assert expand_to_fine(torch.tensor([7.0, 8.0, 9.0]), 3, keep_time=True).tolist() == [7.0, 8.0, 9.0]
    assert pixel_to_latent(81, 480, 832, (4, 8)) == (21, 60, 104) and pixel_to_latent(17, 64, 48, (2, 4)) == (9, 16, 12)
    assert pixel_to_latent(80, 484, 836, (4, 8)) == (20, 60, 104)              # whole latents, rounded down
    assert size_rule("frames", 1) == (2, 1) and size_rule("height", 1) == (4, 0)
    assert size_rule("width", 2, patch=(1, 3), space_unit=2) == (24, 0) and size_rule("frames", 2, frame_unit=4) == (16, 1)


def test_ppf_config_levels_shapes_and_the_levels_table():
    ppf = PyramidConfig(num_stages=3, boundaries=(0.25, 0.6), kind="ppf", resizer="dct")
    sc, sn = ppf.levels(1, 4)
    assert sc.dtype == torch.float64 and sc.tolist() == [0.25] * 4 and sn.tolist() == [0.6] * 4
    assert [t.tolist() for t in ppf.levels(0, 2)] == [[0.0, 0.0], [0.25, 0.25]]
    assert [t.tolist() for t in ppf.levels(2, 2)] == [[0.6, 0.6], [1.0, 1.0]]
    assert [t.tolist() for t in ppf.levels(0, 2, top=True)] == [[0.0, 0.0], [1.0, 1.0]]
    assert ppf.shapes((5, 8, 8)) == [(5, 8, 8)] * 3 and ppf.token_shapes((5, 8, 8)) == [(5, 8, 8), (3, 4, 4), (2, 2, 2)]
    assert ppf.levels_table([5, 5, 5]) == [
        {"stage": 0, "sigma_c": [0.0, 0.0], "sigma_n": [0.25, 0.25]},
        {"stage": 1, "sigma_c": [0.25, 0.25], "sigma_n": [0.6, 0.6]},
        {"stage": 2, "sigma_c": [0.6, 0.6], "sigma_n": [1.0, 1.0]}]
    assert PyramidConfig(num_stages=3, boundaries=(0.25, 0.6)).levels_table([5, 3, 1]) == [
        {"stage": 0, "sigma_c": [0.0, 0.0], "sigma_n": [0.25, 0.25]},
        {"stage": 1, "sigma_c": [round(0.25 / 1.75, 6), round(0.25 / (0.75 * 8 ** 0.5 + 0.25), 6)],
         "sigma_n": [round(0.6 / 1.4, 6), round(0.6 / (0.4 * 8 ** 0.5 + 0.6), 6)]},
        {"stage": 2, "sigma_c": [round(0.6 / 2.2, 6)] * 2, "sigma_n": [1.0, 1.0]}]
    res = PyramidConfig(num_stages=2, boundaries=(0.5,), keep_time=True)
    sc, sn = res.levels(1, 3)
    assert sc.tolist() == pytest.approx([0.5 / (0.5 * 2 + 0.5)] * 3, rel=1e-12) and sn.tolist() == [1.0] * 3   # keep_time: m = 4
    table = PyramidConfig(num_stages=2, boundaries=(0.5,)).levels_table([3, 2])
    assert table[0] == {"stage": 0, "sigma_c": [0.0, 0.0], "sigma_n": [0.5, 0.5]}
    assert table[1]["stage"] == 1 and table[1]["sigma_c"] == [round(1 / 3, 6), round(1 / (1 + 8 ** 0.5), 6)]
    assert res.shapes((5, 8, 8)) == [(5, 8, 8), (5, 4, 4)]


def test_config_from_a_minimal_dict_takes_the_documented_defaults():
    cfg = PyramidConfig.from_dict({"num_stages": "2", "boundaries": [0.4]})
    assert (cfg.num_stages, cfg.boundaries, cfg.resizer, cfg.keep_time, cfg.kind) == (2, (0.4,), "haar", False, "resolution")
    assert PyramidConfig.from_dict({"num_stages": 3}).boundaries == PyramidConfig(num_stages=3).boundaries
    assert PyramidConfig.from_dict({"num_stages": 2, "kind": "ppf"}).ppf
    with pytest.raises(ValueError, match=r"^pyramid kind 'cube' is not one of \('resolution', 'ppf'\)$"):
        PyramidConfig(kind="cube")
