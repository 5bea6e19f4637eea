"""``reproduce NAME --seeds N``: seeds as sweep jobs, the claim checked on the aggregate (hand-computed pools)."""

import json
import statistics

import pytest
from typer.testing import CliRunner

from implicit_bias.cli import app
from implicit_bias.errors import InvalidArgumentError
from implicit_bias.experiments import Criterion, resolve_config
from implicit_bias.sweep import expand, job_folder
from implicit_bias.sweep.seeds import aggregate, seed_grid

runner = CliRunner()


class Config:
    criteria = (
        Criterion("big_enough", "q", ">=", 1.5, "a value criterion: read as the mean over seeds"),
        Criterion("every_seed", "p", ">=", 1.0, "a per-seed criterion: pooled", over="each"),
        Criterion("most_seeds", "p", ">=", 1.0, "the same values, by majority", over="most"),
    )


def job(q, p, seconds=1.0, unmeasured=None):
    result = {"quick": True, "passed": True, "seconds": seconds, "numbers": {"q": q, "r": 2 * q}, "per_seed": {"p": p}}
    if unmeasured:
        result["unmeasured"] = unmeasured
    return result


def test_value_criteria_read_the_mean_over_seeds_and_per_seed_ones_the_pooled_values():
    results = [job(1.0, [1.0, 2.0]), job(3.0, [0.0])]
    summary = aggregate("homogeneous-margin", Config, results, ["seed=0", "seed=1"])
    big, every, most = summary["criteria"]
    assert big["over"] == "mean" and big["measured"] == 2.0 and big["passed"]  # (1 + 3) / 2 >= 1.5
    assert (big["seeds"], big["seeds_holding"]) == (2, 1)  # only seed 1 alone holds
    assert every["measured"] == pytest.approx(1.0) and (every["seeds"], every["seeds_holding"]) == (3, 2)
    assert not every["passed"] and most["passed"]  # 2 of the 3 pooled values: not each, but most
    assert not summary["passed"] and summary["seeds"] == 2 and summary["seconds"] == 2.0
    assert summary["numbers"]["q_mean"] == 2.0 and summary["numbers"]["r_mean"] == 4.0
    assert summary["numbers"]["q_std"] == pytest.approx(statistics.stdev([1.0, 3.0]))  # sample std, √2


def test_a_quantity_one_seed_could_not_measure_fails_naming_that_seed():
    results = [job(2.0, [1.0]), job(2.0, [1.0], unmeasured={"q": "never fit"})]
    big = aggregate("homogeneous-margin", Config, results, ["seed=0", "seed=1"])["criteria"][0]
    assert not big["passed"] and big["reason"] == "not measured: seed=1: never fit"


def test_seed_grid_follows_the_config_and_refuses_what_it_cannot_fan_out():
    assert seed_grid("homogeneous-margin", 3, quick=True) == {"seed": [0, 1, 2]}
    assert seed_grid("cai-2025-near-homogeneous", 2, quick=True) == {"seeds": [[0], [1]]}
    with pytest.raises(InvalidArgumentError, match=r"sukenik-2023 has no seed to fan out \(seeds=\d+\)"):
        seed_grid("sukenik-2023", 3, quick=True)
    with pytest.raises(InvalidArgumentError, match=r"drop --set seed="):
        seed_grid("homogeneous-margin", 3, quick=True, overrides={"seed": 4})
    with pytest.raises(InvalidArgumentError, match="--seeds must be"):
        seed_grid("homogeneous-margin", 0, quick=True)


def test_a_sweep_of_an_experiment_takes_its_thresholds():
    (changed,) = expand(
        "homogeneous-margin", ["seed=0"], quick=True, overrides={"threshold.normalized_margin_grows": 5}
    )
    criterion = next(c for c in changed.config["criteria"] if c["name"] == "normalized_margin_grows")
    assert criterion["threshold"] == 5.0 and criterion["changed_from"] == 1.0
    (plain,) = expand("homogeneous-margin", ["seed=0"], quick=True)
    assert plain.key != changed.key  # another criterion is another job


@pytest.mark.slow  # two quick reproductions in a one-worker process pool
def test_reproduce_with_seeds_checks_the_claim_on_the_jobs_it_ran(tmp_path):
    args = ["reproduce", "homogeneous-margin", "--quick", "--seeds", "2", "--jobs", "1", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "homogeneous-margin over 2 seeds: PASSED" in result.output
    folder = tmp_path / "homogeneous-margin"
    summary = json.loads((folder / "result.json").read_text())
    # the registry fans homogeneous-margin's seeds out itself: a grid over seed runs one per job (seeds=1)
    jobs = expand("homogeneous-margin", ["seed=0..1"], quick=True)
    assert [job.config["seeds"] for job in jobs] == [1, 1]
    assert expand("homogeneous-margin", ["seed=0", "seeds=2"], quick=True)[0].config["seeds"] == 2
    seeds = [json.loads((job_folder(folder, j.key) / "reproduction" / "result.json").read_text()) for j in jobs]
    criteria = resolve_config("homogeneous-margin", quick=True).criteria
    for criterion, outcome in zip(criteria, summary["criteria"], strict=True):
        assert criterion.over == "each"
        values = [value for s in seeds for value in s["per_seed"][criterion.quantity]]
        assert len(values) == 2 and outcome["measured"] == pytest.approx(statistics.fmean(values), rel=1e-12)
        holding = sum(criterion.holds(value)[0] for value in values)
        assert (outcome["seeds"], outcome["seeds_holding"], outcome["passed"]) == (2, holding, holding == 2)
    for key in ("normalized_margin_growth", "final_log_loss"):  # pooled per-seed values, not means of means
        values = [s["per_seed"][key][0] for s in seeds]
        assert summary["numbers"][f"{key}_mean"] == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert summary["numbers"][f"{key}_std"] == pytest.approx(statistics.stdev(values), rel=1e-12)
    assert not any(key.endswith("_mean_mean") for key in summary["numbers"])
    assert "over 2 seeds" in (folder / "report.md").read_text()
    assert (folder / "report.html").stat().st_size > 1000 and (folder / "summary.csv").exists()
    again = runner.invoke(app, args)  # a rerun finds both seeds done and aggregates again
    assert again.exit_code == 0 and json.loads((folder / "result.json").read_text())["criteria"] == summary["criteria"]


def test_seeds_options_are_refused_where_they_do_not_apply(tmp_path):
    for args, message in [
        (["reproduce", "--all", "--seeds", "2"], "--seeds applies to one experiment"),
        (["reproduce", "homogeneous-margin", "--jobs", "2"], "apply with --seeds N"),
        (["reproduce", "sukenik-2023", "--quick", "--seeds", "2"], "has no seed to fan out"),
    ]:
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2 and message in result.output, result.output


def test_a_quantity_read_both_as_one_value_and_per_seed_is_refused():
    class Mixed:
        criteria = (
            Criterion("as_value", "q", ">=", 1.0, "one value"),
            Criterion("as_seeds", "q", ">=", 1.0, "per seed", over="each"),
        )

    with pytest.raises(InvalidArgumentError, match="both as one value and per seed"):
        aggregate("homogeneous-margin", Mixed, [job(1.0, [1.0])], ["seed=0"])
