"""The ``diartune`` command."""

from __future__ import annotations

import argparse
import signal
import sys
from importlib.metadata import version
from pathlib import Path

from diartune.commands import add_export_parser, add_report_parser
from diartune.corpus import BadInput
from diartune.simulate import add_simulate_parser
from diartune.spec.file import load_tuning
from diartune.spec.model import SpecError
from diartune.storage import StorageError

#: Exit codes of ``diartune tune``, by the phase the tuning ends in.
TUNE_EXIT_CODES = {"Succeeded": 0, "Failed": 1, "Suspended": 3}
#: Exit code of every command given bad input (README's table). A trial process's own
#: (``records.EXIT_BAD_INPUT``, 65) is another interface: the one its drivers read.
EXIT_BAD_INPUT = 2


def _stop_on_sigterm() -> None:
    """Make SIGTERM (kill, timeout, a batch scheduler) stop a local tuning as Ctrl-C does,
    its trial processes included: by default it ended this process alone, and the trials
    ran on, orphaned, writing into the output folder."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _tune(args: argparse.Namespace) -> int:
    from diartune.corpus import check_corpus
    from diartune.local.tuning import LocalTuning
    from diartune.search.space import check_spaces
    from diartune.trial.preflight import check_models

    tuning = load_tuning(args.spec)
    check_spaces(tuning.spec, f"{args.spec}: spec.")
    check_models(tuning.spec)
    problems = check_corpus(tuning.spec, args.spec)
    if problems:
        raise BadInput("\n".join(problems))
    output = Path(args.output or Path("runs") / tuning.metadata.name)
    _stop_on_sigterm()
    try:
        summary = LocalTuning(tuning, output, verbose=args.verbose).run()
    except KeyboardInterrupt:
        print(f"\ninterrupted: rerun the same command to resume from {output}", file=sys.stderr)
        return 130
    if summary.phase == "Suspended":
        print(
            f"suspended: no trial was launched; set spec.suspend to false and rerun to resume "
            f"from {output}",
            file=sys.stderr,
        )
    return TUNE_EXIT_CODES.get(summary.phase, 1)


def _trial(args: argparse.Namespace) -> int:
    from diartune.records import TrialRequest
    from diartune.trial.run import main as run_trial
    from diartune.trial.run import main_batch

    texts = [Path(path).read_text("utf-8") for path in args.request or []]
    requests = [
        TrialRequest.model_validate_json(text) for text in texts + (args.request_json or [])
    ]
    log = Path(args.termination_log) if args.termination_log else None
    return run_trial(requests[0], log) if len(requests) == 1 else main_batch(requests, log)


def _models(args: argparse.Namespace) -> int:
    from diartune.spec.model import Data
    from diartune.trial.bootstrap import make_models

    if args.preset == "source":
        return _source_models(args)
    if not (args.database and args.protocol):
        raise BadInput("models: --database and --protocol are required without --preset")
    data = Data(database=args.database, protocol=args.protocol)
    paths = make_models(data, Path(args.output), args.epochs or 20, args.batches_per_epoch)
    for path in paths:
        print(path)
    return 0


def _source_models(args: argparse.Namespace) -> int:
    """The demo's source model: source speakers, ``source`` conversations, from scratch."""
    from dataclasses import replace

    from diartune.adaptation import split_pool
    from diartune.demo import FULL, make_source_model
    from diartune.simulate import SimulationError

    output = Path(args.output)
    budget = replace(FULL, source_epochs=args.epochs or FULL.source_epochs)
    try:
        manifest, _ = split_pool(Path(args.pool), output / "speakers")
        paths = make_source_model(output, Path(args.ami), manifest, budget)
    except SimulationError as error:
        print(f"diartune models: {error}")
        return 2
    for path in paths[:2]:
        print(path)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from diartune.demo import run_demo

    _stop_on_sigterm()
    return run_demo(
        Path(args.output), Path(args.ami), Path(args.pool), quick=args.quick, verbose=args.verbose
    )


def _operator(args: argparse.Namespace) -> int:
    from diartune.operator import run

    run(
        args.namespaces or [],
        clusterwide=args.all_namespaces,
        liveness=args.liveness,
        metrics_port=args.metrics_port,
        log_format=args.log_format,
    )
    return 0


def _crd(args: argparse.Namespace) -> int:
    from diartune.operator.crd import crd_files, render_crds

    if args.output_dir is None:
        sys.stdout.write(render_crds())
        return 0
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in crd_files().items():
        (args.output_dir / name).write_text(text, encoding="utf-8")
        print(args.output_dir / name)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from diartune.search.space import check_spaces

    tuning = load_tuning(args.spec)
    check_spaces(tuning.spec, f"{args.spec}: spec.")
    print(f"{args.spec}: valid DiarizationTuning {tuning.metadata.name!r}")
    if args.models:
        from diartune.trial.preflight import check_models

        check_models(tuning.spec)
        if tuning.spec.pipeline.plda:
            print(f"{tuning.spec.pipeline.plda}: a PLDA for the embedding model's dimension")
    if not args.data:
        return 0
    from diartune.corpus import check_corpus

    data = tuning.spec.data
    try:
        problems = check_corpus(tuning.spec, args.spec)
    except BadInput as error:
        problems = str(error).splitlines()
    for problem in problems:
        print(f"diartune: {problem}", file=sys.stderr)
    if not problems:
        print(f"{data.database}: {data.protocol}: lists, annotations and paths are consistent")
    return EXIT_BAD_INPUT if problems else 0


def _add_verbose(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="also show what pyannote, lightning and torch print (by default only in the "
        "log files: logs/<trial>.log of the output folder)",
    )


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    root = argparse.ArgumentParser(prog="diartune", description=__doc__)
    root.add_argument("--version", action="version", version=version("diartune"))
    commands = root.add_subparsers(dest="command", required=True)

    tune = commands.add_parser("tune", help="run a tuning on this machine (resumable)")
    tune.add_argument("spec", help="DiarizationTuning YAML")
    tune.add_argument("--output", help="output folder (default: runs/<name>)")
    _add_verbose(tune)
    tune.set_defaults(run=_tune)

    trial = commands.add_parser("trial", help="run one trial (what a trial pod runs)")
    source = trial.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--request", action="append", help="TrialRequest JSON file (several: run in turn)"
    )
    source.add_argument(
        "--request-json", action="append", help="TrialRequest JSON text (several: run in turn)"
    )
    trial.add_argument(
        "--termination-log", help="also write the result JSON here (Kubernetes termination message)"
    )
    trial.set_defaults(run=_trial)

    models = commands.add_parser(
        "models", help="make offline models: train a segmentation model, wrap Resemblyzer"
    )
    models.add_argument("--database", help="pyannote.database YAML (without --preset)")
    models.add_argument("--protocol", help="protocol with a train subset (without --preset)")
    models.add_argument("--output", required=True, help="folder for the two checkpoints")
    models.add_argument(
        "--preset",
        choices=("source",),
        help="source: the demo's pretrained model, trained on 'source' conversations of "
        "the source speakers of --ami and --pool (the corpus is simulated into OUTPUT)",
    )
    models.add_argument(
        "--ami",
        default="../shared/data/ami-debug/database.yml",
        help="with --preset: ami-debug's database.yml (its train speakers are source speakers)",
    )
    models.add_argument(
        "--pool",
        default="../shared/data/speech-pool/manifest.csv",
        help="with --preset: speech-pool's manifest.csv (split into source and target speakers)",
    )
    models.add_argument(
        "--epochs", type=int, help="training epochs (default 20; with --preset, the demo's)"
    )
    models.add_argument("--batches-per-epoch", type=int, default=40)
    models.set_defaults(run=_models)

    demo = commands.add_parser("demo", help="make the demo corpus and models, then tune")
    demo.add_argument("--output", default="demo-output")
    demo.add_argument(
        "--ami",
        default="../shared/data/ami-debug/database.yml",
        help="ami-debug's database.yml: the AMI speakers of its train subset",
    )
    demo.add_argument(
        "--pool",
        default="../shared/data/speech-pool/manifest.csv",
        help="speech-pool's manifest.csv: one real speaker per file",
    )
    demo.add_argument("--quick", action="store_true", help="a smaller budget, for smoke tests")
    _add_verbose(demo)
    demo.set_defaults(run=_demo)

    operator = commands.add_parser("operator", help="run the Kubernetes operator (kopf)")
    scope = operator.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "--namespace", "-n", action="append", dest="namespaces", help="watch this namespace"
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch all namespaces")
    operator.add_argument("--liveness", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    operator.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port, at /metrics"
    )
    operator.add_argument(
        "--log-format",
        choices=("plain", "json"),
        default="plain",
        help="plain text lines, or one JSON object per line (default: plain)",
    )
    operator.set_defaults(run=_operator)

    add_export_parser(commands)
    add_report_parser(commands)
    add_simulate_parser(commands)

    crd = commands.add_parser("crd", help="print the CRDs generated from the spec model")
    crd.add_argument("--output-dir", type=Path, help="write one file per CRD here instead")
    crd.set_defaults(run=_crd)

    validate = commands.add_parser("validate", help="check a DiarizationTuning YAML")
    validate.add_argument("spec")
    validate.add_argument(
        "--data",
        action="store_true",
        help="also check the corpus: lists, annotations, annotated regions, audio paths",
    )
    validate.add_argument(
        "--models",
        action="store_true",
        help="also load the models that a check needs: the embedding model to check the "
        "PLDA against, the segmentation model when segmentation.threshold is tuned (a "
        "powerset model has none)",
    )
    validate.set_defaults(run=_validate)
    return root


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``diartune`` console script."""
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (SpecError, StorageError, BadInput, OSError) as error:
        for line in str(error).splitlines():  # one line per problem, each one whole
            print(f"diartune: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
