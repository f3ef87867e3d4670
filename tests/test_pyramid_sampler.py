"""Samplers: the one-stage case is Wan's Euler sampler; with an exact velocity every stage lands exactly."""
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from pyrawan.errors import InputError
from pyrawan.pyramid.config import PyramidConfig
from pyrawan.pyramid.process import per_frame
from pyrawan.pyramid.sampler import default_fewstep_levels, sample_fewstep, sample_multistep

NAMES = ["haar", "dct", "db4"]


def toy_velocity(x, sigma_nat):
    """A smooth nonlinear stand-in for a network: depends on x and on the per-frame level."""
    s = per_frame(sigma_nat, x)
    return torch.tanh(x) * (1 + s) - 0.3 * x.roll(1, dims=-1) * s


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
@pytest.mark.parametrize("steps", [1, 4, 10])
def test_one_stage_equals_diffusers_flow_match_euler(steps, shift):
    noise = torch.randn(2, 4, 3, 6, 6, generator=torch.Generator().manual_seed(steps))
    ours = sample_multistep(toy_velocity, noise, PyramidConfig(num_stages=1), [steps], shift=shift)

    sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(sigmas=torch.linspace(1, 0, steps + 1)[:-1].numpy())
    x = noise.clone()
    for t in sched.timesteps:
        sigma = torch.full((x.shape[2],), float(t) / 1000)
        x = sched.step(toy_velocity(x, sigma), t, x, return_dict=False)[0]
    assert torch.allclose(ours, x, atol=1e-5), (ours - x).abs().max()


def oracle(pyramid, shapes, x0_stages, first_stage):
    """The exact velocity when the data is the single point x0 (Definition 1 stage data).

    From x and its level, recover the noise of the straight path it lies on, then return (y_n - y_c)/d.
    """
    resize = pyramid.resize

    def velocity(x, sigma_nat):
        stage = shapes.index(tuple(x.shape[-3:]))
        sc, sn = pyramid.levels(stage, x.shape[-3], top=stage == first_stage)
        rho = float(((sigma_nat - sc) / (sn - sc))[0])
        x0 = x0_stages[stage]
        x0_up = None if stage == first_stage else resize.up(x0_stages[stage + 1])
        c, n = (per_frame(v, x) for v in (sc, sn))
        signal = (1 - rho) * (1 - c) * x0 + (0 if x0_up is None else rho * (1 - n) * x0_up)
        eps = (x - signal) / per_frame(sigma_nat, x)
        y_c = (1 - c) * x0 + c * eps
        y_n = eps if x0_up is None else (1 - n) * x0_up + n * eps
        return (y_n - y_c) / (n - c)

    return velocity


def three_stage_problem(name, keep_time=False, seed=0):
    pyramid = PyramidConfig(num_stages=3, boundaries=(0.25, 0.6), resizer=name, keep_time=keep_time)
    shapes = pyramid.shapes((5, 8, 8))
    x0 = torch.randn(2, 2, *shapes[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x0_stages = [x0]
    for _ in range(2):
        x0_stages.append(pyramid.resize.down(x0_stages[-1]))
    return pyramid, shapes, x0_stages


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("keep_time", [False, True])
@pytest.mark.parametrize("schedule,shift", [((3, 2, 2), 1.0), ((2, 3, 4), [2.0, 1.0, 3.0]), ((0, 2, 3), 1.0), ((0, 0, 4), 3.0)])
def test_multistep_with_exact_velocity_lands_on_the_data(name, keep_time, schedule, shift):
    pyramid, shapes, x0_stages = three_stage_problem(name, keep_time)
    first = next(2 - k for k, n in enumerate(schedule) if n)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(2, 2, *shapes[first], generator=g, dtype=torch.float64)
    out = sample_multistep(oracle(pyramid, shapes, x0_stages, first), noise, pyramid, schedule, shift, generator=g)
    assert out.shape == x0_stages[0].shape
    assert torch.allclose(out, x0_stages[0], atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("schedule", [(2, 2, 1), (1, 1, 1), (0, 0, 2), (0, 3, 1)])
def test_fewstep_with_exact_velocity_lands_on_the_data(name, schedule):
    pyramid, shapes, x0_stages = three_stage_problem(name)
    first = next(2 - k for k, n in enumerate(schedule) if n)
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(2, 2, *shapes[first], generator=g, dtype=torch.float64)
    levels = default_fewstep_levels(schedule)
    out = sample_fewstep(oracle(pyramid, shapes, x0_stages, first), noise, pyramid, levels, generator=g)
    assert torch.allclose(out, x0_stages[0], atol=1e-8)


def test_same_seed_same_video_and_different_seed_differs():
    pyramid = PyramidConfig(num_stages=3, resizer="dct")
    def run(seed):
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(1, 2, 2, 2, 2, generator=g)
        return sample_multistep(toy_velocity, noise, pyramid, (2, 2, 2), generator=g)
    assert torch.equal(run(0), run(0)) and not torch.allclose(run(0), run(1))


def test_fewstep_must_start_from_pure_noise():
    pyramid = PyramidConfig(num_stages=2)
    with pytest.raises(InputError, match="rho = 1.0"):
        sample_fewstep(toy_velocity, torch.zeros(1, 1, 3, 4, 4), pyramid, [[0.5], [1.0]])


def test_per_stage_shift_length_is_checked():
    with pytest.raises(InputError, match="one per stage"):
        sample_multistep(toy_velocity, torch.zeros(1, 1, 1, 2, 2), PyramidConfig(num_stages=3), (1, 1, 1), shift=[1.0, 2.0])


# ---- what the samplers hand on: levels, callbacks, per-sample noise, non-finite steps, re-noised inputs ----

def test_multistep_levels_per_stage_with_the_default_shift_and_skipped_stages():
    from pyrawan.pyramid.sampler import multistep_levels

    assert multistep_levels((2,)) == [[1.0, 0.5, 0.0]]                          # default shift 1: uniform
    assert multistep_levels((0, 2), shift=[1.0, 3.0]) == [[], pytest.approx([1.0, 0.75, 0.0])]
    with pytest.raises(InputError, match=r"^shift has 1 values"):
        multistep_levels((1, 1), shift=[2.0])


def test_the_first_stage_with_steps_starts_at_pure_noise_and_callbacks_see_every_step():
    """Schedule 0-2-1 (the coarsest stage skipped): the first velocity call is at natural level 1 on every frame;
    the multistep callback gets (stage, step, x) after each Euler step, the few-step one each estimate."""
    pyramid = PyramidConfig(num_stages=3, boundaries=(0.25, 0.6))
    noise = torch.randn(1, 2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for run in ("multistep", "fewstep"):
        seen, calls = [], []

        def velocity(x, sigma_nat):
            seen.append(sigma_nat.clone())
            return toy_velocity(x, sigma_nat)

        def callback(stage, j, x):
            calls.append((stage, j, tuple(x.shape[-3:])))
        if run == "multistep":
            out = sample_multistep(velocity, noise, pyramid, (0, 2, 1), generator=torch.Generator().manual_seed(1),
                                   callback=callback)
            sigma_c = pyramid.levels(1, 3)[0]                  # default shift 1: the second level is rho = 0.5
            assert torch.allclose(seen[1], (sigma_c + 1) / 2)
        else:
            out = sample_fewstep(velocity, noise, pyramid, [[], [1.0, 0.5], [1.0]],
                                 generator=torch.Generator().manual_seed(1), callback=callback)
        assert seen[0].tolist() == [1.0, 1.0, 1.0]
        assert calls == [(1, 0, (3, 4, 4)), (1, 1, (3, 4, 4)), (0, 0, (5, 8, 8))]
        assert out.shape == (1, 2, 5, 8, 8)


def test_a_sample_with_its_own_generator_does_not_depend_on_its_batch():
    pyramid = PyramidConfig(num_stages=3, boundaries=(0.25, 0.6))
    noise = torch.randn(3, 2, 2, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]
    for sample in (sample_multistep, sample_fewstep):
        plan = (1, 1, 1) if sample is sample_multistep else default_fewstep_levels((1, 1, 1))
        batch = sample(toy_velocity, noise, pyramid, plan, generator=gens([10, 11, 12]))
        torch.manual_seed(5)
        alone = sample(toy_velocity, noise[1:2], pyramid, plan, generator=gens([11]))
        assert torch.equal(batch[1:2], alone) and not torch.allclose(batch[0], batch[2])


@pytest.mark.parametrize("fewstep", [False, True])
def test_a_step_that_turns_a_sample_non_finite_names_stage_step_and_sample(fewstep):
    """NaN in sample 1 from the second step of the middle stage (stage 2 of 3, coarsest first)."""
    from pyrawan.errors import NonFiniteError

    pyramid = PyramidConfig(num_stages=3, boundaries=(0.25, 0.6))
    count = [0]

    def velocity(x, sigma_nat):
        count[0] += 1
        v = toy_velocity(x, sigma_nat)
        if count[0] == 4:                               # stage 3 of 3 has 2 steps: the 4th call is stage 2, step 2
            v[1, 0, 0, 0, 0] = float("nan")
        return v
    noise = torch.randn(3, 2, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(NonFiniteError) as err:
        if fewstep:
            sample_fewstep(velocity, noise, pyramid, default_fewstep_levels((2, 2, 1)), torch.Generator().manual_seed(1))
        else:
            sample_multistep(velocity, noise, pyramid, (2, 2, 1), generator=torch.Generator().manual_seed(1))
    assert err.value.where == "stage 2 of 3 (coarsest first), step 2" and err.value.samples == [1]


def test_nonfinite_samples_lists_the_bad_positions():
    from pyrawan.pyramid.sampler import nonfinite_samples

    x = torch.zeros(4, 2, 3)
    assert nonfinite_samples(x) == []
    x[1, 1, 2], x[3, 0, 0] = float("inf"), float("nan")
    assert nonfinite_samples(x) == [1, 3]


def test_levels_with_no_steps_at_all_and_a_stop_step_past_the_end_are_refused():
    from pyrawan.pyramid.sampler import fewstep_rollout

    pyramid = PyramidConfig(num_stages=2)
    with pytest.raises(InputError, match="rho = 1.0"):
        sample_fewstep(toy_velocity, torch.zeros(1, 1, 3, 4, 4), pyramid, [[], []])
    with pytest.raises(InputError, match=r"stop_at = 3 is outside the 3 steps of levels \[\[1.0, 0.5\], \[1.0\]\]"):
        fewstep_rollout(toy_velocity, torch.zeros(1, 1, 2, 2, 2), pyramid, [[1.0, 0.5], [1.0]], 3)


def test_fewstep_inputs_are_stage_samples_of_the_data_with_fresh_noise():
    """With the exact velocity every estimate is the stage's data x0_i (Definition 1), so step k's input must be
    the stage's forward sample: mean (1 - rho)(1 - sigma_c) x0' + rho (1 - sigma_n) P x0_i (x0' = P x0_i on a
    stage's first step, where it comes up from the coarser stage) and variance sigma^2 per frame; every
    estimate along the way is the stage's data (PT's closed form with P on the finer stages)."""
    from pyrawan.pyramid.sampler import fewstep_rollout

    pyramid = PyramidConfig(num_stages=3, boundaries=(0.25, 0.6))
    shapes = pyramid.shapes((5, 8, 8))
    x0 = 5 * torch.randn(1, 1, *shapes[0], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x0_stages = [x0]
    for _ in range(2):
        x0_stages.append(pyramid.resize.down(x0_stages[-1]))
    n = 3000
    velocity = oracle(pyramid, shapes, x0_stages, 2)                     # x0 [1, ...] broadcasts
    levels = default_fewstep_levels((3, 2, 1))
    noise = torch.randn(n, 1, *shapes[2], generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    estimates = []
    sample_fewstep(velocity, noise[:2], pyramid, levels, torch.Generator().manual_seed(5),
                   callback=lambda stage, j, x0_hat: estimates.append((stage, x0_hat)))
    assert len(estimates) == 6
    for stage, x0_hat in estimates:
        assert torch.allclose(x0_hat, x0_stages[stage].expand_as(x0_hat), atol=1e-8)
    for k in range(6):
        x, step = fewstep_rollout(velocity, noise, pyramid, levels, k, torch.Generator().manual_seed(5))
        data = x0_stages[step.stage]
        low = pyramid.resize.project(data) if step.stage < 2 else torch.zeros_like(data)   # top: sigma_n = 1
        first = step.j == 0 and step.stage < 2
        c, s_n, s = (per_frame(v, data) for v in (step.sigma_c, step.sigma_n, step.sigma_nat))
        mean = (1 - step.rho) * (1 - c) * (low if first else data) + step.rho * (1 - s_n) * low
        assert (step.project is None) == (step.stage == 2)
        assert torch.allclose(x.mean(0, keepdim=True), mean, atol=5 / n ** 0.5), k
        assert torch.allclose(x.var(0, keepdim=True), (s ** 2).expand_as(mean), rtol=0.15), k


def test_noise_comes_in_the_latents_dtype():
    from pyrawan.pyramid.sampler import randn

    like = torch.zeros(1, dtype=torch.bfloat16)
    assert randn((2, 3), torch.Generator().manual_seed(0), like).dtype == torch.bfloat16
    assert randn((2, 3), [torch.Generator().manual_seed(0)] * 2, like).dtype == torch.bfloat16


def test_a_rollout_to_step_k_runs_the_model_k_times():
    from pyrawan.pyramid.sampler import fewstep_rollout

    pyramid, calls = PyramidConfig(num_stages=2), []

    def velocity(x, sigma_nat):
        calls.append(1)
        return toy_velocity(x, sigma_nat)
    for k in range(3):
        calls.clear()
        x, step = fewstep_rollout(velocity, torch.zeros(1, 1, 2, 2, 2), pyramid, [[1.0, 0.5], [1.0]], k,
                                  torch.Generator().manual_seed(0))
        assert len(calls) == k and step.index == k
