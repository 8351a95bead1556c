"""``diartune export`` and ``diartune report``: a tuning read back from its records.

Both read a local output folder of ``diartune tune`` or the operator's S3 artifacts
(``s3://bucket/<namespace>/<tuning>``). Bad input (a missing or unreadable file, a spec
that does not validate) is one line naming the file or field, and exit code 2 (``cli.main``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diartune.spec.file import load_tuning
from diartune.spec.model import S3
from diartune.storage import is_s3

if TYPE_CHECKING:
    from diartune.results.artifacts import TuningArtifacts


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments that say where a tuning's records are."""
    parser.add_argument(
        "source",
        help="output folder of diartune tune, or the operator's artifacts of one tuning: "
        "s3://bucket/<namespace>/<tuning>",
    )
    parser.add_argument(
        "--spec",
        help="the DiarizationTuning YAML: its spec and name instead of the spec.json kept "
        "with the records and the source's last path segment",
    )
    parser.add_argument(
        "--s3-endpoint",
        help="S3 endpoint URL (default: AWS_ENDPOINT_URL, else AWS; for the trials' results "
        "of a local folder, the spec's data.s3)",
    )
    parser.add_argument("--s3-region", help="S3 region name")


def read_source(args: argparse.Namespace) -> TuningArtifacts:
    """The tuning that ``add_source_arguments``' arguments name."""
    from diartune.results.artifacts import read_tuning

    given = load_tuning(args.spec) if args.spec else None
    s3 = S3(endpoint=args.s3_endpoint, region=args.s3_region)
    tuning = read_tuning(
        args.source,
        s3 if args.s3_endpoint or args.s3_region else None,
        spec=given.spec if given else None,
        name=given.metadata.name if given else None,
    )
    for uri in tuning.missing:
        print(f"diartune: {uri}: no such file: no DER per file for it", file=sys.stderr)
    return tuning


def _export(args: argparse.Namespace) -> int:
    import optuna

    from diartune.results.export import export_journal

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tuning = read_source(args)
    output = Path(args.output or f"{tuning.name}.optuna.log")
    names = export_journal(tuning, output)
    searched = sum(not record.is_evaluation for record in tuning.records)
    print(f"{output}: {searched} trials in {len(names)} studies: {', '.join(names)}")
    print(f"see them with: optuna-dashboard {output}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from diartune.results.report import write_results

    tuning = read_source(args)
    default = Path("runs", tuning.name) if is_s3(args.source) else Path(args.source)
    folder = Path(args.output) if args.output else default
    folder.mkdir(parents=True, exist_ok=True)
    _, markdown = write_results(folder, tuning.name, tuning.study(), tuning.seconds)
    sys.stdout.write(markdown)
    print(f"\n{folder}: summary.md, summary.json, der.png, best.yaml")
    return 0


def add_export_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``export`` to ``commands`` (what ``ArgumentParser.add_subparsers`` returned)."""
    export = commands.add_parser(
        "export",
        help="write a tuning's trials as Optuna studies (a journal file) for optuna-dashboard",
        description="One Optuna study per stage, in one journal file: "
        "optuna-dashboard FILE shows them.",
    )
    add_source_arguments(export)
    export.add_argument(
        "--output", "-o", help="the journal file to write (default: <tuning>.optuna.log)"
    )
    export.set_defaults(run=_export)
    return export


def add_report_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``report`` to ``commands`` (what ``ArgumentParser.add_subparsers`` returned)."""
    report = commands.add_parser(
        "report",
        help="render a tuning's summary.md, summary.json, der.png and best.yaml from its "
        "records, as diartune tune does",
    )
    add_source_arguments(report)
    report.add_argument(
        "--output",
        "-o",
        help="folder to write to (default: the source folder; runs/<tuning> for s3://)",
    )
    report.set_defaults(run=_report)
    return report
