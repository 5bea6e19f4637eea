"""Declarative pass criteria: evaluation against hand-worked truth, --set of a threshold, the report table and
result.json's criteria list, on throwaway experiments (the real registry is restored after each test)."""

import dataclasses
import json
import math
import os
from dataclasses import dataclass

import pytest
import yaml
from typer.testing import CliRunner

from implicit_bias.cli import app
from implicit_bias.errors import InvalidArgumentError, UnknownNameError
from implicit_bias.experiments import (
    EXPERIMENTS,
    Criterion,
    Experiment,
    ExperimentError,
    Outcome,
    register,
    reproduce,
    reproduce_all,
    resolve_config,
)
from implicit_bias.experiments.analysis import key_part, order_violations
from implicit_bias.experiments.criteria import evaluate
from implicit_bias.experiments.trial import trial
from implicit_bias.report.markdown import criteria_table, headline

RESULT_KEYS = {
    "name",
    "quantity",
    "measured",
    "comparison",
    "threshold",
    "passed",
    "stands_for",
    "over",
    "changed_from",
    "reason",
    "seeds",
    "seeds_holding",
}


def criterion(comparison, threshold, name="check"):
    return Criterion(name, "value", comparison, threshold, "a hand-made check")


# (comparison, threshold, measured, holds): each comparison on both sides of its threshold and exactly at it
CASES = [
    (">=", 2.0, 2.0, True),
    (">=", 2.0, 1.999, False),
    (">", 2.0, 2.0, False),
    (">", 2.0, 2.001, True),
    ("<=", 0.01, 0.01, True),
    ("<=", 0.01, 0.0101, False),
    ("<", 0.01, 0.01, False),
    ("<", 0.01, 0.0099, True),
    ("==", 0, 0, True),
    ("==", 0, 1, False),
    ("==", 1, True, True),  # a boolean fact compares as 1 / 0
    ("==", 1, False, False),
    ("in", (0.8, 1.2), 0.8, True),
    ("in", (0.8, 1.2), 1.2, True),
    ("in", (0.8, 1.2), 0.7999, False),
    ("in", (0.8, 1.2), 1.2001, False),
    (">=", 100, math.inf, True),  # a ratio over a run that never fit is infinite, and infinitely large
]


@pytest.mark.parametrize(("comparison", "threshold", "measured", "holds"), CASES)
def test_each_comparison_against_hand_truth(comparison, threshold, measured, holds):
    assert criterion(comparison, threshold).holds(measured) == (holds, None)


@pytest.mark.parametrize("comparison", [">=", ">", "<=", "<", "=="])
def test_nan_measured_never_passes_and_says_why(comparison):
    for threshold in (0.0, -math.inf if comparison in (">=", ">") else math.inf):
        passed, reason = criterion(comparison, threshold).holds(math.nan)
        assert passed is False and "NaN" in reason
    passed, reason = criterion("in", (-math.inf, math.inf)).holds(math.nan)
    assert passed is False and "NaN" in reason


def test_evaluate_reports_every_field_and_names_a_missing_quantity():
    checks = (criterion(">=", 1.0, "big"), criterion("in", (0, 2), "ranged"))
    outcomes = evaluate(checks, {"value": math.nan}, "tiny")
    assert [set(o) for o in outcomes] == [RESULT_KEYS, RESULT_KEYS]
    assert [o["passed"] for o in outcomes] == [False, False] and all("NaN" in o["reason"] for o in outcomes)
    assert outcomes[1]["threshold"] == [0.0, 2.0] and outcomes[0]["threshold"] == 1.0
    with pytest.raises(InvalidArgumentError, match=r"experiment 'tiny': criterion 'big' reads numbers\['value'\]"):
        evaluate(checks[:1], {"other": 1.0}, "tiny")


def test_a_criterion_is_checked_when_built():
    with pytest.raises(UnknownNameError, match="comparison of criterion 'check' '=>'; expected one of"):
        criterion("=>", 1.0)
    with pytest.raises(InvalidArgumentError, match="must be a number .* got float nan"):
        criterion(">=", math.nan)
    with pytest.raises(InvalidArgumentError, match="must be a number .* got bool True"):
        criterion(">=", True)
    with pytest.raises(InvalidArgumentError, match=r"range \[low, high\] with low <= high .* got \(2, 1\)"):
        criterion("in", (2, 1))
    with pytest.raises(InvalidArgumentError, match=r"range \[low, high\].* got 1.0"):
        criterion("in", 1.0)
    with pytest.raises(InvalidArgumentError, match="criterion name must be an identifier .* got 'margin ratio'"):
        criterion(">=", 1.0, name="margin ratio")
    with pytest.raises(InvalidArgumentError, match="must say what it stands_for"):
        Criterion("check", "value", ">=", 1.0, " ")


# -- throwaway experiments ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TinyConfig:
    value: float = 1.0
    criteria: tuple[Criterion, ...] = (
        Criterion("value_above", "value", ">", 0.5, "a fake claim: the value exceeds one half"),
        Criterion("value_in_range", "value", "in", (0.0, 10.0), "a fake claim: the value lies in a range"),
    )


def _report_value(config, folder, progress):
    return Outcome(numbers={"value": config.value}, figures=[])


def _report_text(config, folder, progress):
    return Outcome(numbers={"value": "1.0"}, figures=[])


@pytest.fixture
def tiny():
    """The real registry plus throwaway experiments registered through the registry API; restored afterwards."""
    saved = dict(EXPERIMENTS)
    register(Experiment("tiny", "a value exceeds one half", TinyConfig(), TinyConfig(), _report_value, "value"))
    yield "tiny"
    EXPERIMENTS.clear()
    EXPERIMENTS.update(saved)


def test_set_threshold_moves_the_verdict_in_the_predicted_direction(tmp_path, tiny):
    assert reproduce(tiny, tmp_path / "preset", progress=False)["passed"]  # 1.0 > 0.5
    raised = reproduce(tiny, tmp_path / "raised", overrides={"threshold.value_above": 2.0}, progress=False)
    assert raised["passed"] is False  # 1.0 > 2 fails
    failed = raised["criteria"][0]
    assert (failed["name"], failed["threshold"], failed["changed_from"], failed["passed"]) == (
        "value_above",
        2.0,
        0.5,
        False,
    )
    assert raised["criteria"][1]["passed"] and raised["criteria"][1]["changed_from"] is None
    # a range narrowed below the value fails too; widening it again passes
    narrowed = {"threshold.value_in_range": [0.0, 0.9]}
    assert not reproduce(tiny, tmp_path / "narrowed", overrides=narrowed, progress=False)["passed"]
    # the change is recorded in config.yaml and in the report
    stored = yaml.safe_load((tmp_path / "raised" / "config.yaml").read_text())["criteria"][0]
    assert (stored["threshold"], stored["changed_from"]) == (2.0, 0.5)
    assert "threshold changed from 0.5 by --set" in (tmp_path / "raised" / "report.md").read_text()


def test_set_threshold_on_the_command_line(tmp_path, tiny):
    runner = CliRunner()
    args = ["reproduce", tiny, "--out", str(tmp_path), "--no-progress"]
    assert runner.invoke(app, [*args, "--set", "threshold.value_above=0.9"]).exit_code == 0
    failed = runner.invoke(app, [*args, "--force", "--set", "threshold.value_in_range=[2, 3]"])
    assert failed.exit_code == 1 and "FAILED" in failed.output
    unknown = runner.invoke(app, [*args, "--force", "--set", "threshold.value_abov=2"])
    assert unknown.exit_code == 2
    assert "has no criterion 'value_abov'" in unknown.output and "value_above, value_in_range" in unknown.output


def test_bad_threshold_overrides_are_one_line_naming_the_key(tiny):
    with pytest.raises(UnknownNameError, match=r"no criterion 'nope' .*its criteria: value_above, value_in_range"):
        resolve_config(tiny, quick=True, overrides={"threshold.nope": 1})
    with pytest.raises(InvalidArgumentError, match="--set threshold.value_above must be a number .* got str 'big'"):
        resolve_config(tiny, quick=True, overrides={"threshold.value_above": "big"})
    with pytest.raises(InvalidArgumentError, match=r"--set threshold.value_in_range must be a range \[low, high\]"):
        resolve_config(tiny, quick=True, overrides={"threshold.value_in_range": 3})
    # the preset's own value is no change
    same = resolve_config(tiny, quick=True, overrides={"threshold.value_above": 0.5})
    assert same.criteria[0].changed_from is None


def test_config_yaml_form_reads_back_to_the_same_config(tiny):
    """A sweep job stores dataclasses.asdict(config) and reproduces with it as overrides: the same config."""
    changed = resolve_config(tiny, quick=True, overrides={"threshold.value_above": 0.7, "value": 3.0})
    assert resolve_config(tiny, quick=True, overrides=dataclasses.asdict(changed)) == changed
    # a second change keeps the preset's threshold as the origin
    again = resolve_config(tiny, quick=True, overrides={**dataclasses.asdict(changed), "threshold.value_above": 0.9})
    assert (again.criteria[0].threshold, again.criteria[0].changed_from) == (0.9, 0.5)
    for real in ("soudry-2018", "kunin-2023-sparsity"):  # a range criterion among them
        config = resolve_config(real, quick=True)
        assert resolve_config(real, quick=True, overrides=dataclasses.asdict(config)) == config


def test_report_table_and_result_json_list_every_criterion(tmp_path, tiny):
    overrides = {"threshold.value_above": 5.0, "value": 2.0}
    result = reproduce(tiny, tmp_path, overrides=overrides, progress=False)
    payload = json.loads((tmp_path / "result.json").read_text())
    assert payload["criteria"] == result["criteria"]
    assert [c["name"] for c in payload["criteria"]] == ["value_above", "value_in_range"]
    assert [set(c) for c in payload["criteria"]] == [RESULT_KEYS] * 2
    above, ranged = payload["criteria"]
    assert (above["measured"], above["comparison"], above["passed"], above["over"]) == (2.0, ">", False, "value")
    assert (ranged["threshold"], ranged["passed"]) == ([0.0, 10.0], True)
    assert payload["passed"] is False  # all criteria must hold
    report = (tmp_path / "report.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| value_")}
    assert set(rows) == {"value_above", "value_in_range"}
    assert "value = 2 | > 5 (threshold changed from 0.5 by --set) | **no** |" in rows["value_above"]
    assert "| in [0, 10] | yes | a fake claim: the value lies in a range |" in rows["value_in_range"]
    assert "1 of 2 hold." in report


def test_criteria_table_shows_why_a_nan_failed():
    outcome = evaluate((criterion("<=", 0.01),), {"value": math.nan}, "tiny")
    (row,) = criteria_table(outcome)[2:]
    assert "value = nan" in row and "**no** (measured NaN" in row


def _never_fits(config, folder, progress):
    return Outcome(numbers={}, figures=[], unmeasured={"value": "the run never fit its data"})


def test_an_unmeasured_quantity_fails_its_criteria_with_the_reason(tmp_path, tiny):
    register(Experiment("tiny-unfit", "unfit", TinyConfig(), TinyConfig(), _never_fits, "value"))
    result = reproduce("tiny-unfit", tmp_path, progress=False)
    assert result["passed"] is False and result["unmeasured"] == {"value": "the run never fit its data"}
    for outcome in result["criteria"]:
        assert outcome["measured"] is None and outcome["passed"] is False
        assert outcome["reason"] == "not measured: the run never fit its data"
    assert (
        "| value | in [0, 10] | **no** (not measured: the run never fit its data) |"
        in (tmp_path / "report.md").read_text()
    )


@pytest.mark.parametrize(
    ("over", "values", "passed", "measured", "holding"),
    [  # criterion: value >= 1 over per-seed values
        ("each", [1.0, 2.0, 3.0], True, 2.0, 3),
        ("each", [1.0, 2.0, 0.5], False, 3.5 / 3, 2),
        ("most", [1.0, 2.0, 0.5], True, 3.5 / 3, 2),
        ("most", [1.0, 0.5, 0.5, 2.0], False, 1.0, 2),  # 2 of 4 is not more than half
        ("mean", [0.0, 0.5, 2.5], True, 1.0, 1),  # the mean is exactly at the threshold
        ("mean", [0.0, 0.5, 2.4], False, 2.9 / 3, 1),
        ("each", [1.0, math.nan, 2.0], False, math.nan, 2),
    ],
)
def test_per_seed_criteria_against_hand_truth(over, values, passed, measured, holding):
    check = Criterion("big", "value", ">=", 1.0, "a hand-made per-seed check", over=over)
    (outcome,) = evaluate((check,), {}, "tiny", per_seed={"value": values})
    assert (outcome["passed"], outcome["seeds"], outcome["seeds_holding"]) == (passed, len(values), holding)
    assert outcome["measured"] == pytest.approx(measured, nan_ok=True)
    if math.isnan(measured):
        assert "NaN" in outcome["reason"]
    with pytest.raises(InvalidArgumentError, match=r"criterion 'big' \(over '\w+'\) reads per_seed\['value'\]"):
        evaluate((check,), {"value": 1.0}, "tiny")  # a single value is not per-seed data


def _three_seeds(config, folder, progress):
    return Outcome(numbers={}, figures=[], per_seed={"value": [1.0, 2.0, 6.0]})


def test_per_seed_values_are_summarized_and_reported(tmp_path, tiny):
    per_seed = TinyConfig(
        criteria=(
            Criterion("each_above", "value", ">", 1.5, "a fake claim, per seed", over="each"),
            Criterion("most_above", "value", ">", 1.5, "a fake claim, for most seeds", over="most"),
            Criterion("mean_above", "value_mean", ">", 1.5, "a fake claim on the mean"),
        )
    )
    register(Experiment("tiny-seeds", "seeds", per_seed, per_seed, _three_seeds, "value_mean"))
    result = reproduce("tiny-seeds", tmp_path, progress=False)
    assert result["per_seed"] == {"value": [1.0, 2.0, 6.0]}
    assert result["numbers"]["value_mean"] == 3.0
    assert result["numbers"]["value_std"] == pytest.approx(math.sqrt(7))  # sample std: ((−2)² + (−1)² + 3²)/(3 − 1)
    assert [c["passed"] for c in result["criteria"]] == [False, True, True]
    report = (tmp_path / "report.md").read_text()
    assert "| value = 3 (mean over 3 seeds) | each seed: > 1.5 | **no** (2 of 3 seeds hold) |" in report
    assert "| most seeds: > 1.5 | yes (2 of 3 seeds hold) |" in report


@dataclass(frozen=True)
class SeededConfig:
    seed: int = 0
    seeds: int = 3
    criteria: tuple[Criterion, ...] = (
        Criterion("square_small", "square", "<", 5.0, "a fake claim: seed² stays below 5, per seed", over="each"),
        Criterion("square_small_mostly", "square", "<", 5.0, "the same claim for most seeds", over="most"),
        Criterion("margin_positive", "margin", ">", 0.0, "a fake claim needing a fit, per seed", over="each"),
    )


def _square_of_seed(config, folder, progress):
    """One seed's run: square = seed²; seed 4 'never fits', so its margin is unmeasured."""
    (folder / "seen.txt").write_text(f"{config.seed} {config.seeds}")
    numbers = {"square": float(config.seed**2)}
    unmeasured = {"margin": "never fit"} if config.seed == 4 else {}
    if not unmeasured:
        numbers["margin"] = 0.5
    return Outcome(numbers, ["seen.txt"], f"notes of seed {config.seed}", unmeasured=unmeasured)


def _fan_out(**changes):
    config = dataclasses.replace(SeededConfig(), **changes)
    return Experiment("tiny-fan", "squares", config, config, _square_of_seed, "square", fans_out_seeds=True)


def test_the_registry_runs_a_single_seed_runner_per_seed_and_summarizes_each_number(tmp_path, tiny):
    register(_fan_out())
    result = reproduce("tiny-fan", tmp_path / "a", progress=False)
    assert result["per_seed"] == {"square": [0.0, 1.0, 4.0], "margin": [0.5, 0.5, 0.5]}
    numbers = result["numbers"]
    assert numbers["seeds"] == 3 and numbers["square_mean"] == pytest.approx(5 / 3)
    assert numbers["square_std"] == pytest.approx(math.sqrt(13 / 3))  # ((5/3)² + (2/3)² + (7/3)²)/(3 − 1)
    assert [(c["passed"], c["seeds_holding"]) for c in result["criteria"]] == [(True, 3), (True, 3), (True, 3)]
    # seed 0 writes into the experiment's folder, each other seed into seed_<s>/, every runner with seeds=1
    assert [(tmp_path / "a" / sub / "seen.txt").read_text() for sub in ("", "seed_1", "seed_2")] == [
        "0 1", "1 1", "2 1",
    ]  # fmt: skip
    report = (tmp_path / "a" / "report.md").read_text()
    assert "notes of seed 0" in report and "`seed_1/`, `seed_2/`" in report and "notes of seed 1" not in report
    assert headline(result, "square") == f"square = {5 / 3:.6g} ± {math.sqrt(13 / 3):.6g}"
    # seeds 3 and 4 (--set seed=3 seeds=2): 9 and 16 fail, seed 4's margin is not measured
    moved = reproduce("tiny-fan", tmp_path / "b", overrides={"seed": 3, "seeds": 2}, progress=False)
    assert moved["per_seed"] == {"square": [9.0, 16.0]} and moved["unmeasured"] == {"margin": "seed 4: never fit"}
    square, mostly, margin = moved["criteria"]
    assert (square["passed"], square["seeds_holding"], mostly["passed"]) == (False, 0, False)
    assert not margin["passed"] and margin["reason"] == "not measured: seed 4: never fit"
    with pytest.raises(InvalidArgumentError, match="seeds must be >= 1, got 0"):
        reproduce("tiny-fan", tmp_path / "c", overrides={"seeds": 0}, progress=False)


def test_register_refuses_a_fan_out_without_int_seed_fields(tiny):
    @dataclass(frozen=True)
    class Listed:
        seed: int = 0
        seeds: tuple[int, ...] = (0, 1, 2)
        criteria: tuple[Criterion, ...] = SeededConfig.criteria

    with pytest.raises(TypeError, match=r"'tiny-listed' \(quick\): fans_out_seeds needs an int 'seeds' field"):
        register(Experiment("tiny-listed", "x", Listed(), Listed(), _square_of_seed, "square", fans_out_seeds=True))


def _dies(config, folder, progress):
    os._exit(3)  # a worker killed mid-run (only ever run in a worker process)


def test_reproduce_all_in_two_workers_gives_the_one_process_results_and_survives_a_dying_worker(tmp_path, tiny):
    EXPERIMENTS.clear()
    register(Experiment("tiny", "a value exceeds one half", TinyConfig(), TinyConfig(), _report_value, "value"))
    register(_fan_out())
    serial = reproduce_all(tmp_path / "serial", progress=False)
    parallel = reproduce_all(tmp_path / "parallel", progress=False, jobs=2)
    assert [r["name"] for r in parallel] == ["tiny", "tiny-fan"]
    for one, two in zip(serial, parallel, strict=True):
        assert (one["passed"], one["numbers"], one["criteria"]) == (two["passed"], two["numbers"], two["criteria"])
    index = (tmp_path / "parallel" / "index.md").read_text()
    assert index.replace(str(tmp_path / "parallel"), "") .count("tiny-fan") >= 1 and "2 of 2 claims reproduced" in index
    register(Experiment("tiny-dies", "a worker dies", TinyConfig(), TinyConfig(), _dies, "value"))
    results = reproduce_all(tmp_path / "dies", progress=False, jobs=2)
    by_name = {r["name"]: r for r in results}
    assert by_name["tiny"]["passed"] and by_name["tiny-fan"]["passed"]  # lost with the dying worker, then rerun
    assert not by_name["tiny-dies"]["passed"] and "its worker process failed" in by_name["tiny-dies"]["error"]
    with pytest.raises(InvalidArgumentError, match="jobs must be >= 1, got 0"):
        reproduce_all(tmp_path / "zero", progress=False, jobs=0)


def test_numbers_must_be_numbers_under_identifier_keys(tmp_path, tiny):
    register(Experiment("tiny-text", "text", TinyConfig(), TinyConfig(), _report_text, "value"))
    with pytest.raises(ExperimentError, match=r"numbers\['value'\] must be a bool, int or float, got str '1.0'"):
        reproduce("tiny-text", tmp_path, progress=False)
    assert json.loads((tmp_path / "result.json").read_text())["passed"] is False  # recorded all the same


def test_a_missing_quantity_is_an_error_naming_the_experiment_and_key(tmp_path, tiny):
    wrong = TinyConfig(criteria=(Criterion("typo", "valeu", ">", 0.0, "a criterion reading a key never reported"),))
    register(Experiment("tiny-typo", "typo", wrong, wrong, _report_value, "value"))
    with pytest.raises(ExperimentError, match=r"experiment 'tiny-typo': criterion 'typo' reads numbers\['valeu'\]"):
        reproduce("tiny-typo", tmp_path, progress=False)


def test_register_refuses_a_config_without_criteria(tiny):
    @dataclass(frozen=True)
    class Bare:
        value: float = 1.0

    with pytest.raises(InvalidArgumentError, match=r"experiment 'bare' \(quick\): criteria must be a non-empty list"):
        register(Experiment("bare", "no criteria", Bare(), Bare(), _report_value, "value"))
    twice = TinyConfig(criteria=(criterion(">", 0.0, "same"), criterion("<", 2.0, "same")))
    with pytest.raises(InvalidArgumentError, match="criterion names must be unique, same repeat"):
        register(Experiment("twice", "same name twice", twice, twice, _report_value, "value"))
    assert "bare" not in EXPERIMENTS and "twice" not in EXPERIMENTS


def test_every_registered_experiment_states_its_criteria():
    for name, experiment in EXPERIMENTS.items():
        for preset in (experiment.quick, experiment.full):
            assert preset.criteria, name
            for check in preset.criteria:  # each cites its paper: authors and a year
                assert any(str(year) in check.stands_for for year in range(2018, 2026)), (name, check.name)


def test_order_violations_and_key_part_by_hand():
    assert order_violations([1, 2, 3]) == 0 and order_violations([3, 2, 1]) == 2
    assert order_violations([1, 1, 2]) == 1 and order_violations([1, 1, 2], strict=False) == 0
    assert order_violations([5.0]) == 0
    assert [key_part(v) for v in (0.25, 0.0, 1e-05, 0.001)] == ["0p25", "0", "1em05", "0p001"]
    assert key_part("normalized-gd") == "normalized_gd" and key_part("body.layer1.0.weight") == "body_layer1_0_weight"


def test_trial_needs_the_shared_settings_it_reads():
    @dataclass(frozen=True)
    class NoSeed:
        device: str = "cpu"
        log_points: int = 5

    with pytest.raises(TypeError, match="NoSeed has no field 'seed': pass seed= to trial"):
        trial(NoSeed(), None, None, progress=False)


def test_sukenik_2023s_per_run_collapse_thresholds_are_config_fields(tmp_path):
    import math

    from implicit_bias.experiments import reproduce

    tiny = {"steps": 5, "depths": [3], "seeds": 2, "num_classes": 2, "per_class": 2, "width": 4}
    loose = {"collapse_loss_gap": math.inf, "collapse_nc1": math.inf, "collapse_cosine": math.inf}
    everything = reproduce("sukenik-2023", tmp_path / "a", quick=True, overrides={**tiny, **loose}, progress=False)
    assert everything["numbers"]["min_fraction_collapsed"] == 1.0  # every run counts when nothing is required
    nothing = reproduce(
        "sukenik-2023", tmp_path / "b", quick=True, overrides={**tiny, "collapse_nc1": 0.0}, progress=False
    )
    assert nothing["numbers"]["min_fraction_collapsed"] == 0.0  # NC1 < 0 is impossible
