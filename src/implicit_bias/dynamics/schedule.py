"""When to log: terminal-phase effects live on log time, so logging steps are spaced geometrically."""

from __future__ import annotations

import numpy as np

from ..validation import check_scalar


def log_spaced_steps(steps: int, points: int = 100) -> list[int]:
    """Sorted distinct steps 0, 1, …, ``steps``, about ``points`` of them, geometrically spaced after step 0;
    the first step 0 and the last step ``steps`` are always among them (``points=1`` gives just those two).

    >>> log_spaced_steps(1000, 5)
    [0, 1, 6, 32, 178, 1000]
    >>> log_spaced_steps(1000, 1)
    [0, 1000]
    """
    check_scalar("steps", steps, int, low=0)
    check_scalar("points", points, int, low=1)
    if steps == 0:
        return [0]
    grid = np.rint(np.geomspace(1, steps, num=points)).astype(np.int64) if points > 1 else []
    return [0, *(int(s) for s in np.unique([*grid, steps]))]
