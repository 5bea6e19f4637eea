"""The package's import surface: `import implicit_bias as ib` is cheap and lazy, and no import changes the user's
matplotlib backend. Each check runs in a fresh interpreter, since this process has long imported everything."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def run_python(code: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("MPLBACKEND", None)  # conftest sets it for this process; a user's interpreter has its own choice
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], check=False, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


SUBPACKAGES = [
    "metrics",
    "train",
    "data",
    "models",
    "symmetry",
    "losses",
    "dynamics",
    "experiments",
    "report",
    "dufm",
    "validation",
    "errors",
    "integrations",
    "sweep",
]


def test_import_is_cheap_and_lists_every_subpackage():
    run_python(
        f"""
        import sys
        import implicit_bias as ib

        heavy = sorted(m for m in ("torch", "matplotlib", "numpy", "scipy") if m in sys.modules)
        assert not heavy, f"import implicit_bias imported {{heavy}}"
        assert set({SUBPACKAGES!r}) <= set(dir(ib)), dir(ib)
        assert ib.errors.InvalidArgumentError.__name__ == "InvalidArgumentError"
        assert "torch" not in sys.modules
        try:
            ib.metricz
        except AttributeError as error:
            assert "'metricz'" in str(error) and "metrics" in str(error), error
        else:
            raise AssertionError("ib.metricz resolved")
        """
    )


@pytest.mark.slow  # a fresh interpreter imports torch, scipy and matplotlib: seconds
def test_subpackages_load_on_use_keep_the_users_matplotlib_backend_and_figures_render_headless(tmp_path):
    figure_path = tmp_path / "figure.png"
    run_python(
        f"""
        import sys
        import matplotlib
        matplotlib.use("svg")  # a notebook's or script's own choice
        import implicit_bias as ib

        for name in {SUBPACKAGES!r}:
            assert getattr(ib, name) is sys.modules[f"implicit_bias.{{name}}"], name
        import implicit_bias.report.figures
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        ib.report.plot_series({str(figure_path)!r}, {{"loss": ([1, 2, 4], [1.0, 0.5, 0.25])}}, title="loss", logy=True)
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        assert "matplotlib.pyplot" not in sys.modules  # no pyplot: no global figure state, no backend resolution
        """
    )
    assert figure_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure_path.stat().st_size > 1000


def test_numba_is_imported_only_when_a_cpu_loss_is_first_computed():
    run_python(
        """
        import sys
        import torch
        from implicit_bias.losses import log_loss

        assert "numba" not in sys.modules
        log_loss(torch.zeros(2, 3, dtype=torch.float64), torch.tensor([0, 2]), "cross-entropy")
        assert "numba" in sys.modules
        """
    )
