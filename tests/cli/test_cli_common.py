"""The solver options every fitting verb shares (cellw1.cli._common)."""

from __future__ import annotations

import argparse

from cellw1.cli._common import add_solver_arguments, solver_config
from cellw1.ot.conditional import ConditionalConfig


def test_solver_options_reach_the_config():
    parser = argparse.ArgumentParser()
    add_solver_arguments(parser)
    default = solver_config(parser.parse_args([]))
    assert default.effect_alpha == 0.05
    assert default.regression_iters == 300
    assert solver_config(parser.parse_args(["--effect-alpha", "none"])).effect_alpha is None
    assert solver_config(parser.parse_args(["--effect-alpha", "0.01"])).effect_alpha == 0.01
    assert solver_config(parser.parse_args(["--regression-iters", "50"])).regression_iters == 50
    assert default.patience == 5
    assert solver_config(parser.parse_args(["--patience", "none"])).patience is None
    assert solver_config(parser.parse_args(["--patience", "2"])).patience == 2
    assert not default.shrink_response
    assert solver_config(parser.parse_args(["--shrink-response"])).shrink_response


def test_conditional_defaults_survive_the_options():
    """``fit --conditional`` starts from the conditional model's own defaults, not the single map's."""
    parser = argparse.ArgumentParser()
    add_solver_arguments(parser)
    config = solver_config(parser.parse_args([]), ConditionalConfig)
    assert config == ConditionalConfig()
    assert config.potential_iters == 2_000
    assert config.batch_size == 512
    assert config.shrink_response
    off = solver_config(parser.parse_args(["--no-shrink-response", "--potential-iters", "50"]), ConditionalConfig)
    assert not off.shrink_response
    assert off.potential_iters == 50
    assert off.batch_size == 512
