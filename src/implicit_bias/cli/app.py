"""The ``implicit-bias`` command line: a thin typer layer over the library."""

from __future__ import annotations

import datetime
import inspect
import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import __version__
from ..errors import ImplicitBiasError, InvalidArgumentError
from ..validation import check_scalar, parse_assignments

# click's UsageError (an unknown option, a value of the wrong type), from whichever click typer uses (it vendors one)
_UsageError = next(kind for kind in typer.BadParameter.__mro__ if kind.__name__ == "UsageError")


class _Commands(typer.core.TyperGroup):
    """The command group, printing a usage error as one line with exit code 2, like every other user error."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _UsageError as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # `implicit-bias` alone: the help, as before
                error.show()
            else:
                command = error.ctx.command_path if error.ctx is not None else "implicit-bias"
                errors.print(
                    f"[bold red]error:[/] {escape(error.format_message())} (see {command} --help)",
                    highlight=False,
                    soft_wrap=True,
                )
            raise SystemExit(2) from None
        except typer.Abort:
            errors.print("aborted")
            raise SystemExit(1) from None
        raise SystemExit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="implicit-bias",
    cls=_Commands,
    help="Measure the implicit biases of gradient-trained networks and reproduce the literature's claims.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
if not console.is_terminal:  # logs and pipes: wide enough that tables keep one line per row
    console = Console(width=160)
errors = Console(stderr=True)


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Print an :class:`ImplicitBiasError` as one red line and exit with code 2 (no traceback)."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ImplicitBiasError as error:
            errors.print(f"[bold red]error:[/] {error}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def timestamped(prefix: str) -> Path:
    """``runs/<prefix>-YYYYmmdd-HHMMSS`` (a new folder name for each invocation)."""
    return Path("runs") / f"{prefix}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def version_callback(value: bool) -> None:
    if value:
        console.print(f"implicit-bias {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Measure the implicit biases of gradient-trained networks and reproduce the literature's claims."""


@app.command()
@user_errors
def train(
    config: Annotated[
        Path | None, typer.Option(help="A YAML config (keys of TrainConfig); options below override it.")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Dataset name (see `implicit-bias list`). Default: gaussians.")
    ] = None,
    data_option: Annotated[
        list[str] | None,
        typer.Option("--data-option", "-d", help="Dataset option key=value (repeatable)."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model spec, e.g. 'mlp:depth=3,width=64,bias=false'.")] = None,
    loss: Annotated[
        str | None,
        typer.Option(help="exponential | logistic | cross-entropy | mse. Default: exponential."),
    ] = None,
    optimizer: Annotated[str | None, typer.Option(help="Optimizer name. Default: gd.")] = None,
    optimizer_option: Annotated[
        list[str] | None,
        typer.Option("--optimizer-option", "-o", help="Optimizer option key=value, e.g. momentum=0.9 (repeatable)."),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Number of optimizer steps. Default: 1000.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate. Default: 0.05.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Minibatch size. Default: full batch.")] = None,
    eval_batch_size: Annotated[
        int | None,
        typer.Option(help="Samples per forward pass at logged steps and in probes. Default: all at once."),
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="float64 | float32 (TrainConfig checks it). Default: float64.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda. Default: cpu.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed. Default: 0.")] = None,
    probe: Annotated[list[str] | None, typer.Option(help="Probe name (repeatable). Default: margins.")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run directory. Default: runs/train-<time>.")] = None,
    snapshots: Annotated[
        str | None,
        typer.Option(help="log: keep weights at ~20 log-spaced steps (for `implicit-bias diagnose RUN_DIR`)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a model and write a run directory (config, metrics table, checkpoint, log)."""
    from ..train import TrainConfig, run
    from ..validation import dataclass_from_mapping

    base = TrainConfig.from_file(config) if config is not None else TrainConfig()
    given = {
        "dataset": dataset,
        "model": model,
        "loss": loss,
        "optimizer": optimizer,
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "eval_batch_size": eval_batch_size,
        "dtype": dtype,
        "device": device,
        "seed": seed,
        "snapshots": snapshots,
    }
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if data_option:
        overrides["data_options"] = {**base.data_options, **parse_assignments(data_option, "--data-option")}
    if optimizer_option:
        overrides["optimizer_options"] = {
            **base.optimizer_options,
            **parse_assignments(optimizer_option, "--optimizer-option"),
        }
    if probe:
        overrides["probes"] = list(probe)
    resolved = dataclass_from_mapping(TrainConfig, overrides, base=base, source="train")
    folder = run_dir or timestamped("train")
    history = run(resolved, folder, progress=progress)
    _print_rows(history, last=4)
    console.print(f"run written to [bold]{folder}[/]")


@app.command()
@user_errors
def resume(
    run_dir: Annotated[Path, typer.Argument(help="The run directory to continue.")],
    steps: Annotated[
        int | None, typer.Option(help="Train to this many steps in all (extends the run). Default: the run's own.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Continue a run from its last good checkpoint; the result is bit-identical to an uninterrupted run.

    Every setting is the run's own (an edited config.yaml is refused); only --steps may extend it.
    """
    import warnings

    from ..train import resume_run

    def one_line(message: Warning | str, *args: Any, **kwargs: Any) -> None:
        errors.print(f"[bold yellow]warning:[/] {message}", highlight=False, markup=True, soft_wrap=True)

    with warnings.catch_warnings():
        warnings.showwarning = one_line
        history = resume_run(run_dir, steps=steps, progress=progress)
    _print_rows(history, last=4)
    console.print(f"run {run_dir} complete")


@app.command()
@user_errors
def show(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    last: Annotated[int, typer.Option(help="How many of the last logged steps to print (0: all).")] = 6,
) -> None:
    """Print a run's metrics table and write one PNG figure per logged quantity into RUN_DIR/figures."""
    from ..errors import MissingFileError
    from ..report import plot_history
    from ..train.history import History
    from ..train.rundir import METRICS_FILE

    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise MissingFileError(f"{str(run_dir)!r} is not a run directory: it holds no {METRICS_FILE}")
    try:
        history = History.from_csv(path.read_text())
    except (ValueError, KeyError) as error:
        from ..errors import CorruptFileError

        raise CorruptFileError(f"{str(path)!r} is not a readable metrics table: {error}") from None
    _print_rows(history, last=last)
    figures = plot_history(history, run_dir / "figures")
    console.print(f"{len(figures)} figures written to [bold]{run_dir / 'figures'}[/]")


def _print_rows(history: Any, *, last: int) -> None:
    """The last ``last`` logged steps as columns, one row per logged quantity (readable with many probes)."""
    rows = history.rows[-last:] if last else history.rows
    shown = f" (last {len(rows)})" if len(rows) < len(history) else ""
    table = Table(title=f"{len(history)} logged steps{shown}")
    table.add_column("quantity", style="bold")
    for row in rows:
        table.add_column(f"step {int(row['step'])}", justify="right")
    for column in history.columns:
        if column not in ("step", "time"):
            table.add_row(column, *[(f"{row[column]:.6g}" if column in row else "") for row in rows])
    console.print(table)


@app.command()
@user_errors
def rates(
    model: Annotated[str, typer.Argument(help="Model spec, e.g. 'resnet:width=8' or 'mlp:depth=3,width=64'.")],
    data: Annotated[str, typer.Option(help="Dataset giving the input shape, classes and example inputs.")] = "digits",
    choice: Annotated[str, typer.Option(help="uniform | last-layer.")] = "uniform",
    mode: Annotated[str, typer.Option(help="train | eval: batch norm's scaling rule depends on it.")] = "eval",
    seed: Annotated[int, typer.Option(help="Seed of the model's initialization.")] = 0,
) -> None:
    """Infer the per-parameter rates Λ of a model (Kunin et al. 2023), print them and check them numerically."""
    import torch

    from ..data import load
    from ..models import build
    from ..symmetry import check_rates, infer_rates
    from ..validation import check_choice

    check_choice("mode", mode, ("train", "eval"))
    dataset = load(data, seed=seed)
    network = build(model, dataset.input_shape, dataset.num_classes, seed=seed).to(torch.float64)
    network.train(mode == "train")
    example = dataset.X[:64].to(torch.float64)
    inferred = infer_rates(network, example, choice)
    console.print(inferred.explain(network), highlight=False, markup=False)
    check = check_rates(network, inferred, example)
    console.print(
        f"check on {len(example)} inputs of {data!r} (float64): Φ(ψ_α θ) vs e^α Φ(θ) {check.definition_error:.2e}, "
        f"Euler identity {check.euler_error:.2e}",
        highlight=False,
    )


@app.command()
@user_errors
def diagnose(
    run_dir: Annotated[
        Path | None, typer.Argument(help="A run trained with --snapshots log: diagnose every snapshot, as trends.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Your model as MODULE:FACTORY (a .py file or an importable module) or a spec, e.g. 'cnn'."),
    ] = None,
    weights: Annotated[
        Path | None, typer.Option(help="Weights: .safetensors, or a PyTorch checkpoint (read with weights_only=True).")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="A dataset name (see `implicit-bias list`) or a .safetensors/.pt file of X, y.")
    ] = None,
    data_option: Annotated[
        list[str] | None, typer.Option("--data-option", "-d", help="Dataset option key=value (repeatable).")
    ] = None,
    layers: Annotated[
        list[str] | None, typer.Option("--layers", help="Feature layer by module name (repeatable). Default: all.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Report folder: report.html, metrics.csv, figures/. Default with RUN_DIR: RUN_DIR/diagnosis."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Samples per forward pass.")] = 1024,
    device: Annotated[str | None, typer.Option(help="cpu | cuda. Default: cpu.")] = None,
    kkt: Annotated[bool, typer.Option(help="Compute the KKT residual (per-sample gradients).")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar per pass over the data.")] = True,
) -> None:
    """Measure every implicit bias of a trained model and write a report folder (HTML, CSV, PNG/PDF figures).

    Homogeneity and rates, margins, neural collapse per layer, weight and feature spectra, effective depth.
    Give --model and --data (with --weights), or RUN_DIR: a run trained with --snapshots log.
    RUN_DIR is diagnosed at every snapshot with the run's own model, data and dtype, as trends over the steps.
    """
    names = [name.strip() for item in layers or [] for name in item.split(",") if name.strip()] or None
    options = {"layers": names, "batch_size": batch_size, "device": device, "kkt": kkt, "progress": progress}
    if run_dir is not None:
        from ..diagnosis.trends import diagnose_run, write_trend

        if model is not None or data is not None or weights is not None or data_option:
            raise InvalidArgumentError("RUN_DIR brings its own model, weights and data: drop --model/--weights/--data")
        folder = out or run_dir / "diagnosis"
        from ..diagnosis.command import check_out

        check_out(folder)
        trend = diagnose_run(run_dir, **options)
        write_trend(trend, folder)
        console.print(f"{len(trend.steps)} snapshots (steps {trend.steps[0]}–{trend.steps[-1]}) diagnosed")
        result = trend.diagnoses[-1]
    else:
        from ..diagnosis.command import diagnose_to_folder

        if model is None or data is None or out is None:
            raise InvalidArgumentError("give --model, --data and --out (or a RUN_DIR trained with --snapshots log)")
        if weights is None:
            errors.print("[bold yellow]warning:[/] no --weights: diagnosing the model as its factory initializes it")
        folder = out
        parsed = parse_assignments(data_option or [], "--data-option")
        result = diagnose_to_folder(model=model, weights=weights, data=data, data_options=parsed, out=out, **options)
    table = Table(title=f"diagnosis of {result.model} on {result.data}")
    table.add_column("quantity", style="bold")
    table.add_column("value", justify="right")
    for key, value in result.summary.items():
        table.add_row(key, f"{value:.6g}")
    console.print(table)
    for line in result.skipped:
        console.print(f"skipped: {line}", highlight=False, markup=False, soft_wrap=True)
    console.print(f"report written to [bold]{folder / 'report.html'}[/] ({len(result.table)} numbers per diagnosis)")


@app.command("list")
@user_errors
def list_components() -> None:
    """List the datasets, models, losses, optimizers, probes and experiments."""
    from ..data import LOADERS, loader_options
    from ..dynamics import OPTIMIZERS, optimizer_options
    from ..experiments import EXPERIMENTS
    from ..losses import LOSSES
    from ..models import BUILDERS, builder_options
    from ..train import PROBES, make_probe

    table = Table(title="implicit-bias components", show_lines=False)
    table.add_column("kind", style="bold")
    table.add_column("name")
    table.add_column("options / claim")
    for name in LOADERS:
        table.add_row("dataset", name, ", ".join(f"{k}={v!r}" for k, v in loader_options(name).items()))
    for name in BUILDERS:
        table.add_row("model", name, ", ".join(f"{k}={v!r}" for k, v in builder_options(name).items()))
    for name in LOSSES:
        table.add_row("loss", name, "")
    for name in OPTIMIZERS:
        table.add_row("optimizer", name, ", ".join(optimizer_options(name)))
    for name in PROBES:
        table.add_row("probe", name, (inspect.getdoc(make_probe(name)) or "").split("\n")[0])
    for name, experiment in EXPERIMENTS.items():
        table.add_row("experiment", name, experiment.claim)
    console.print(table)


@app.command()
@user_errors
def reproduce(
    name: Annotated[str | None, typer.Argument(help="The experiment to run (see `implicit-bias list`).")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Run every registered experiment and write an index report.")
    ] = False,
    quick: Annotated[
        bool,
        typer.Option(help="The quick preset (≥ 3 seeds; 7–150 s each, one thread on a 2-core machine, lyu-li-2020 and galanti-2022-depth the longest)."),
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a config field, key=value, or a pass criterion's threshold, threshold.NAME=value (the "
            "report lists the criteria; repeatable).",
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder. Default: runs/reproduce-<time>.")] = None,
    force: Annotated[
        bool,
        typer.Option(help="Replace an earlier reproduction of the same experiment in the output folder."),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    seeds: Annotated[
        int | None,
        typer.Option(
            help="Run the experiment once per seed 0..N-1 as sweep jobs in OUT/NAME/jobs/ (resumable) and check the "
            "claim on the aggregate (OUT/NAME/report.md).",
        ),
    ] = None,
    executor: Annotated[str, typer.Option(help="With --seeds: where the jobs run: local, submitit or ray.")] = "local",
    jobs: Annotated[
        int | None,
        typer.Option(
            help="With --all: experiments run at once, one torch thread each (default: the number of cores; 1 runs "
            "them one after another in this process). With --seeds: workers (local), array cap (submitit)."
        ),
    ] = None,
    cluster: Annotated[str, typer.Option(help="With --seeds --executor submitit: slurm or local.")] = "slurm",
    address: Annotated[str, typer.Option(help="With --seeds --executor ray: auto, host:port or local.")] = "auto",
) -> None:
    """Run a registered experiment (or --all): it checks its claim and writes result.json, figures and a report.

    With --seeds N the experiment runs once per seed through the sweep machinery (`implicit-bias sweep`; other
    executor settings there) and its criteria are checked on the aggregate: a criterion on one run's value on
    the mean over the seeds, a per-seed criterion on every seed's values. Exit code 0: every claim reproduced
    (with --all: or failed only criteria its config declares failing at this scale, fails_at_this_scale);
    1: a claim failed or an experiment (or a seed job) raised (its traceback is in its folder); 2: a usage error
    (unknown name, bad --set, a non-empty output folder without --force, --seeds with --all).
    """
    from ..experiments import EXPERIMENTS, ExperimentError, reproduce_all
    from ..experiments import reproduce as run_experiment
    from ..report.markdown import as_declared, headline, index_summary

    if all_ == (name is not None):
        raise InvalidArgumentError("give either an experiment NAME or --all")
    folder = out or timestamped("reproduce-quick" if quick else "reproduce")
    if all_:
        given_options = (
            (set_, "--set"), (seeds is not None, "--seeds"), (executor != "local", "--executor"),
            (cluster != "slurm", "--cluster"), (address != "auto", "--address"),
        )  # fmt: skip
        for given, option in given_options:
            if given:
                raise InvalidArgumentError(f"{option} applies to one experiment; it cannot be combined with --all")
        table = Table(title=f"reproductions ({'quick' if quick else 'full'})")
        for column in ("experiment", "claim", "passed", "key number", "seconds"):  # long texts wrap, never vanish
            wraps = column in ("claim", "key number")
            table.add_column(column, no_wrap=not wraps, min_width=16 if wraps else None, max_width=60 if wraps else None)

        def add(result: dict[str, Any]) -> None:
            key = EXPERIMENTS[result["name"]].key_number
            if "error" in result:
                passed, shown = "[red]error[/]", result["error"]
            else:
                passed = "[green]yes[/]" if result["passed"] else "[yellow]no, as declared[/]" if as_declared(result) else "[red]no[/]"
                shown = headline(result, key)
            table.add_row(result["name"], result["claim"], passed, shown, f"{result['seconds']:.1f}")
            console.print(f"{result['name']}: passed {passed} in {result['seconds']:.1f} s", highlight=False)

        workers = (os.cpu_count() or 1) if jobs is None else check_scalar("--jobs", jobs, int, low=1)
        results = reproduce_all(folder, quick=quick, progress=progress, force=force, jobs=workers, on_result=add)
        console.print(table)
        console.print(index_summary(results))
        console.print(f"index report: [bold]{folder / 'index.md'}[/] and [bold]{folder / 'index.html'}[/]")
        if not all(result["passed"] or as_declared(result) for result in results):
            raise typer.Exit(1)
        return
    assert name is not None
    overrides = parse_assignments(set_ or [], "--set")
    if seeds is not None:
        _reproduce_seeds(name, folder / name, seeds, quick, overrides, executor, jobs, cluster, address)
        return
    if (executor, jobs, cluster, address) != ("local", None, "slurm", "auto"):
        raise InvalidArgumentError("--executor, --jobs, --cluster and --address apply with --seeds N")
    try:
        result = run_experiment(name, folder / name, quick=quick, overrides=overrides, progress=progress, force=force)
    except ExperimentError as error:
        errors.print(f"[bold red]{name}: ERROR[/] {error}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(1) from None
    verdict = "[green]PASSED[/]" if result["passed"] else "[red]FAILED[/]"
    if as_declared(result):
        verdict += " (only criteria its config declares failing at this scale; the report says why)"
    console.print(f"{name}: {verdict} in {result['seconds']:.1f} s — {result['claim']}")
    for key, value in result["numbers"].items():
        console.print(f"  {key} = {value:.6g}" if isinstance(value, float) else f"  {key} = {value}")
    _print_criteria(result["criteria"])
    console.print(f"report: [bold]{folder / name / 'report.md'}[/]")
    if not result["passed"]:
        raise typer.Exit(1)


def _print_criteria(criteria: list[dict[str, Any]]) -> None:
    from ..report.markdown import criterion_cells

    for criterion in criteria:
        criterion_name, measured, condition, verdict, _ = criterion_cells(criterion)
        mark = "[green]holds[/]" if criterion["passed"] else "[red]fails[/]"
        console.print(f"  {mark} {criterion_name}: {measured} ({condition}) — {verdict}", highlight=False)


def _reproduce_seeds(
    name: str,
    folder: Path,
    seeds: int,
    quick: bool,
    overrides: dict[str, Any],
    executor: str,
    jobs: int | None,
    cluster: str,
    address: str,
) -> None:
    """``reproduce NAME --seeds N``: the seed jobs, then the aggregate's verdict and criteria."""
    from ..experiments import EXPERIMENTS
    from ..sweep.seeds import reproduce_seeds

    options = {"cluster": cluster} if executor == "submitit" else {"address": address} if executor == "ray" else {}
    summary = reproduce_seeds(
        name, folder, seeds, quick=quick, overrides=overrides, executor=executor, jobs=jobs, **options
    )
    if "error" in summary:
        errors.print(f"[bold red]{name}: ERROR[/] {summary['error']} (see {folder / 'jobs'})", markup=True)
        raise typer.Exit(1)
    verdict = "[green]PASSED[/]" if summary["passed"] else "[red]FAILED[/]"
    console.print(f"{name} over {seeds} seeds: {verdict} — {summary['claim']}")
    key = EXPERIMENTS[name].key_number
    for suffix in ("_mean", "_std"):
        if key + suffix in summary["numbers"]:
            console.print(f"  {key}{suffix} = {summary['numbers'][key + suffix]:.6g}")
    _print_criteria(summary["criteria"])
    console.print(f"report: [bold]{folder / 'report.md'}[/] (each seed: {folder / 'jobs'}/<key>/reproduction/)")
    if not summary["passed"]:
        raise typer.Exit(1)


@app.command()
@user_errors
def sweep(
    target: Annotated[str, typer.Argument(help="An experiment name (see `implicit-bias list`) or a training YAML.")],
    grid: Annotated[
        list[str],
        typer.Option(help="key=v1,v2 or key=a..b (integers, a and b included), e.g. seed=0..9 (repeatable)."),
    ],
    out: Annotated[Path, typer.Option(help="The sweep folder: DIR/jobs/<key>/ per job; rerun to finish it.")],
    quick: Annotated[bool, typer.Option(help="An experiment's quick preset.")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config field in every job, key=value (repeatable).")
    ] = None,
    executor: Annotated[str, typer.Option(help="Where jobs run: local, submitit (Slurm) or ray.")] = "local",
    jobs: Annotated[
        int | None,
        typer.Option(
            help="local: workers (default: CPU count); submitit: array parallelism cap (--cluster local: job "
            "processes at once, default CPU count); ray local: CPUs."
        ),
    ] = None,
    retries: Annotated[int, typer.Option(help="Runs again of a failed job in this invocation.")] = 1,
    slurm_partition: Annotated[str | None, typer.Option(help="submitit: the Slurm partition.")] = None,
    timeout_min: Annotated[int, typer.Option(help="submitit: minutes per job; a job timed out is requeued.")] = 60,
    gpus_per_node: Annotated[int, typer.Option(help="submitit: GPUs per job; ray: num_gpus of each task.")] = 0,
    cpus_per_task: Annotated[int, typer.Option(help="submitit, ray: CPUs (torch threads) of each job.")] = 1,
    mem_gb: Annotated[float | None, typer.Option(help="submitit: memory per job, GB.")] = None,
    cluster: Annotated[str, typer.Option(help="submitit: slurm, or local (each job a process here).")] = "slurm",
    address: Annotated[
        str, typer.Option(help="ray: auto (this machine's cluster), host:port, ray://host:port, or local (start one).")
    ] = "auto",
) -> None:
    """Run a grid of configurations as jobs, each into OUT/jobs/<key>/ with a DONE marker written last.

    Rerunning the same command skips done jobs and runs failed or unfinished ones again (a killed training
    run resumes from its checkpoint); new values of the same grid keys extend the sweep (OUT/sweep.yaml records
    each run). Ends with sweep-report's summary and figures. On a cluster (submitit, ray) OUT must be on a
    filesystem that every node shares. Exit code 0: every job done; 1: some job failed (its traceback.txt is in
    its folder); 2: a usage error (unknown grid key, malformed range, unknown executor, another sweep in OUT,
    no sbatch, no Ray cluster, a missing extra).
    """
    from ..sweep import run as run_sweep

    check_scalar("--retries", retries, int, low=0)
    table = Table(title=f"sweep of {target} in {out}")
    for column in ("key", "grid values", "status", "seconds", "result"):
        table.add_column(column, no_wrap=column != "result", justify="right" if column == "seconds" else "left")

    def add_row(result: dict[str, Any]) -> None:
        values = ", ".join(f"{k}={v}" for k, v in result["point"].items())
        if result["status"] == "failed":
            status, shown = "[red]failed[/]", result["error"]
        else:
            status = "[green]done[/]" + (" (earlier)" if result.get("skipped") else "")
            if "passed" in result:
                number = result["numbers"].get(result["key_number"])
                shown = ("passed" if result["passed"] else "[red]not passed[/]") + (
                    f", {result['key_number']} = {number:.4g}" if isinstance(number, (int, float)) else ""
                )
            else:
                numbers = result["numbers"]
                shown = ", ".join(f"{k} = {numbers[k]:.4g}" for k in ("log_loss", "accuracy") if k in numbers)
        table.add_row(result["key"], values, status, f"{result['seconds']:.1f}", shown)

    def progress(result: dict[str, Any]) -> None:
        if not result.get("skipped"):
            console.print(f"{result['key']} {result['status']} in {result['seconds']:.1f} s", highlight=False)

    results = run_sweep(
        target,
        grid,
        out,
        quick=quick,
        overrides=parse_assignments(set_ or [], "--set"),
        executor=executor,
        jobs=jobs,
        retries=retries,
        on_result=progress,
        cluster=cluster,
        partition=slurm_partition,
        timeout_min=timeout_min,
        gpus_per_node=gpus_per_node,
        cpus_per_task=cpus_per_task,
        mem_gb=mem_gb,
        address=address,
    )
    for result in results:
        add_row(result)
    console.print(table)
    failed = [result["key"] for result in results if result["status"] == "failed"]
    if failed:
        errors.print(f"[bold red]{len(failed)} of {len(results)} jobs failed:[/] {', '.join(failed)}", highlight=False)
        raise typer.Exit(1)
    console.print(f"all {len(results)} jobs done in [bold]{out / 'jobs'}[/]; summary: [bold]{out / 'summary.csv'}[/]")


@app.command("sweep-report")
@user_errors
def sweep_report(
    out: Annotated[Path, typer.Argument(help="A sweep folder (the --out of `implicit-bias sweep`).")],
    quantity: Annotated[
        list[str] | None, typer.Option(help="Show only this quantity (repeatable; summary.csv has them all).")
    ] = None,
) -> None:
    """Aggregate the done jobs' numbers per grid point over seeds into OUT/summary.csv and print them.

    Each row: the grid values (seed left out), a quantity, n, the mean, the sample standard deviation and the
    95% interval mean ± t(0.975, n−1)·std/√n (Student t). Reads only the files; runs nothing.
    """
    from ..sweep.report import SUMMARY_FILE, write_report

    keys, rows, figures = write_report(out)
    table = Table(title=f"{out}: mean ± 95% CI over seeds")
    for column in (*keys, "quantity", "n", "mean", "std", "95% CI"):
        table.add_column(column, justify="right" if column in ("n", "mean", "std") else "left")

    def shown(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    for row in rows:
        if quantity and row["quantity"] not in quantity:
            continue
        interval = f"[{row['ci95_low']:.4g}, {row['ci95_high']:.4g}]" if row["ci95_low"] != "" else ""
        if row["non_finite"]:
            interval = f"[red]{row['non_finite']} non-finite value(s)[/]"
        statistics = [str(row["n"]), shown(row["mean"]), shown(row["std"]), interval]
        table.add_row(*[shown(row[k]) for k in keys], row["quantity"], *statistics)
    console.print(table)
    console.print(f"{len(rows)} rows written to [bold]{out / SUMMARY_FILE}[/], {len(figures)} figure files (PNG, PDF)")
