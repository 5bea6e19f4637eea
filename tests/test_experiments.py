"""Every registered reproduction, run in its quick preset, must reproduce its claim (end-to-end)."""

import json

import pytest

from implicit_bias.errors import InvalidArgumentError, UnknownNameError
from implicit_bias.experiments import EXPERIMENTS, reproduce, resolve_config


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_quick_reproduction_meets_its_criteria_and_writes_its_report(tmp_path, name):
    result = reproduce(name, tmp_path / name, quick=True, progress=False)
    failed = [c for c in result["criteria"] if not c["passed"]]
    declared = set(getattr(EXPERIMENTS[name].quick, "fails_at_this_scale", {}))
    # only criteria the preset declares failing at this scale may fail; a declared one may hold on another machine
    # (square-loss-normalization's seed 2 sits at its threshold: 1.497 on one machine, 1.59 on another), and the
    # report prints every declared reason either way
    assert {c["name"] for c in failed} <= declared, json.dumps(failed or result["numbers"], indent=1, default=str)
    assert result["passed"] == (not failed)
    report = (tmp_path / name / "report.md").read_text()
    assert all(f"- `{criterion}`: " in report for criterion in declared)
    assert [c["name"] for c in result["criteria"]] == [c.name for c in EXPERIMENTS[name].quick.criteria]
    key = EXPERIMENTS[name].key_number  # a per-seed quantity where the registry fans the seeds out
    assert (f"{key}_mean" if EXPERIMENTS[name].fans_out_seeds else key) in result["numbers"]
    if EXPERIMENTS[name].fans_out_seeds:
        assert result["numbers"]["seeds"] == len(result["per_seed"][key]) == EXPERIMENTS[name].quick.seeds >= 3
    for figure in result["figures"]:
        assert (tmp_path / name / figure).stat().st_size > 1000
    assert json.loads((tmp_path / name / "result.json").read_text())["name"] == name


def test_overrides_are_checked():
    assert resolve_config("soudry-2018", quick=True, overrides={"steps": 10}).steps == 10
    with pytest.raises(UnknownNameError, match="'stepz'"):
        resolve_config("soudry-2018", quick=True, overrides={"stepz": 10})
    with pytest.raises(InvalidArgumentError, match="steps must be int"):
        resolve_config("soudry-2018", quick=True, overrides={"steps": "ten"})
    # One type check for configs, specs and options: 1e3 on a command line is the int 1000, and a tuple field's
    # elements are checked (a list of strings used to pass as a tuple and fail later inside the run).
    assert resolve_config("soudry-2018", quick=True, overrides={"steps": 1e3}).steps == 1000
    assert resolve_config("galanti-2022-depth", quick=True, overrides={"depths": [4, 6]}).depths == (4, 6)
    with pytest.raises(InvalidArgumentError, match=r"depths must be tuple\[int, \.\.\.\], got list \[4, 'x'\]"):
        resolve_config("galanti-2022-depth", quick=True, overrides={"depths": [4, "x"]})
    with pytest.raises(InvalidArgumentError, match=r"steps must be int, got float 2\.5"):
        resolve_config("soudry-2018", quick=True, overrides={"steps": 2.5})
