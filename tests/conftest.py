"""Shared pytest options: the regression sweep is opt-in (`make regress`)."""

import os

import pytest


def pytest_addoption(parser):
    parser.addoption("--regress-seed", type=int, default=1, help="base seed of `make regress`")
    parser.addoption("--regress-count", type=int, default=1000,
                     help="number of random GEMMs in `make regress`")
    parser.addoption("--fuzz-words", type=int, default=10000,
                     help="instruction words the fuzzer of `make regress` generates per seed")


def pytest_collection_modifyitems(config, items):
    if "regress" in (config.getoption("-m") or ""):
        return
    deselected = [item for item in items if "regress" in item.keywords]
    if deselected:
        items[:] = [item for item in items if "regress" not in item.keywords]
        config.hook.pytest_deselected(items=deselected)


@pytest.fixture
def sim_seed(request):
    """Seed of a simulation test: NPU_SEED from the environment overrides the test's default,
    so a failure printed with its seed can be replayed."""
    return lambda default: int(os.environ.get("NPU_SEED", default))
