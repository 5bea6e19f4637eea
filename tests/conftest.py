import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per xdist worker: workers × threads = cores, no OpenMP oversubscription (which costs up to 4×)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

DURATIONS = "implicit_bias/slow_durations"  # pytest cache key: seconds of each slow test in the last run
# CPU seconds of the quick reproductions measured on 2 cores (2026-12-02): the order on a fresh checkout (CI), which
# has no cache yet; a run's own measurements replace them.
MEASURED = json.loads((Path(__file__).parent / "slow_durations.json").read_text())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests marked ``slow`` first, longest (in the last run, else in ``slow_durations.json``) first, the
    rest in their usual order.

    xdist (``-n 2``) hands the first tests out to the workers in turn and the rest to whichever is free, so the
    long tests split evenly and the short ones fill the gaps; a long test started last would leave the other
    worker idle. Every worker reads the same cache, so all collect the same order, as xdist requires.
    """
    cache = getattr(config, "cache", None)  # absent under -p no:cacheprovider
    seconds = {**MEASURED, **(cache.get(DURATIONS, {}) if cache is not None else {})}
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    slow.sort(key=lambda item: -seconds.get(item.nodeid, 0.0))  # stable: unmeasured ones keep their order
    moved = {id(item) for item in slow}
    items[:] = slow + [item for item in items if id(item) not in moved]


class _SlowDurations:
    """Records how long each passed slow test took; the controller (or a run without xdist) saves it at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config, self.seconds = config, {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and report.passed and "slow" in report.keywords:
            self.seconds[report.nodeid] = report.duration

    def pytest_sessionfinish(self) -> None:
        cache = getattr(self.config, "cache", None)
        if self.seconds and cache is not None and not os.environ.get("PYTEST_XDIST_WORKER"):
            cache.set(DURATIONS, {**cache.get(DURATIONS, {}), **self.seconds})


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_SlowDurations(config), "implicit_bias_slow_durations")
