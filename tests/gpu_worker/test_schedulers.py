"""Per-job schedulers: every choice maps to its diffusers class, and `default` undoes any earlier choice."""

from __future__ import annotations

from typing import Any

import pytest

from gpu_worker.schedulers import apply_scheduler
from producer.jobs import Scheduler

EXPECTED = {
    Scheduler.DDIM: "DDIMScheduler",
    Scheduler.EULER: "EulerDiscreteScheduler",
    Scheduler.EULER_ANCESTRAL: "EulerAncestralDiscreteScheduler",
    Scheduler.DPMPP_2M: "DPMSolverMultistepScheduler",
    Scheduler.UNIPC: "UniPCMultistepScheduler",
    Scheduler.PNDM: "PNDMScheduler",
}


def test_every_choice_is_mapped() -> None:
    assert set(EXPECTED) == set(Scheduler) - {Scheduler.DEFAULT}


@pytest.mark.parametrize("choice", list(EXPECTED))
def test_choice_keeps_the_models_noise_schedule_and_default_restores(tiny_pipe: Any, choice: Scheduler) -> None:
    apply_scheduler(tiny_pipe, Scheduler.DEFAULT)
    original = tiny_pipe.scheduler
    apply_scheduler(tiny_pipe, choice)
    assert type(tiny_pipe.scheduler).__name__ == EXPECTED[choice]
    assert tiny_pipe.scheduler.config.beta_schedule == "scaled_linear"
    assert tiny_pipe.scheduler.config.beta_start == original.config.beta_start
    apply_scheduler(tiny_pipe, Scheduler.DEFAULT)
    assert tiny_pipe.scheduler is original


def test_choices_derive_from_the_original_not_the_previous_job(tiny_pipe: Any) -> None:
    apply_scheduler(tiny_pipe, Scheduler.DPMPP_2M)
    apply_scheduler(tiny_pipe, Scheduler.UNIPC)
    assert "algorithm_type" not in tiny_pipe.scheduler.config
    apply_scheduler(tiny_pipe, Scheduler.DEFAULT)


def test_dpmpp_2m_is_second_order_dpm_solver_plus_plus(tiny_pipe: Any) -> None:
    apply_scheduler(tiny_pipe, Scheduler.DPMPP_2M)
    assert tiny_pipe.scheduler.config.algorithm_type == "dpmsolver++"
    assert tiny_pipe.scheduler.config.solver_order == 2
    apply_scheduler(tiny_pipe, Scheduler.DEFAULT)
