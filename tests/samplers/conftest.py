"""Fixtures for the sampler tests; the analytic oracles live in sampler_oracles.py."""

from __future__ import annotations

import pytest

from ldmkit.diffusion.process import GaussianProcess
from ldmkit.diffusion.schedules import get_betas


@pytest.fixture(scope="session")
def process() -> GaussianProcess:
    return GaussianProcess(get_betas("linear", 1000))
