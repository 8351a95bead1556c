"""Benchmark: the segmentation model's fine-tuning and the pipeline's inference on this device.

Runs on whatever ``diartune.trial.device.device()`` picks (the GPU when there is one, else
the CPU) and measures, through diartune's own code paths:

- **fine-tuning** (``diartune.trial.finetune.fine_tune``, one call per model and
  precision): training chunks per second and seconds per epoch on the train subset of a
  small corpus (the demo's by default, its train subset listed ``--copies`` times: see
  ``training_corpus``). Precision "32" everywhere; "16-mixed" too on a
  GPU (on a CPU ``fine_tune`` always trains in 32-bit; "bf16-mixed" is not offered, see
  docs/spec.md). Two models:
  ``offline``, the demo's segmentation model (PyanNet with 2 LSTM layers of 64 units,
  fine-tuned from its checkpoint as a trial does), and ``pyannote-size``, a PyanNet of
  pyannote/segmentation-3.0's architecture (4 bidirectional LSTM layers of 128 units,
  trained from scratch here since no hub is reachable: the same compute per chunk);
- **inference** (``build_pipeline``, ``pipeline.to(device())`` and ``diarize``, as
  ``diartune trial`` does): segmentation and embedding seconds per second of audio
  (real-time factor, lower is faster) on real recordings (ami-debug's development files,
  else the 30 s sample inside pyannote.audio); each row says where the models ran;
- **peak memory** of each measurement: ``torch.cuda.max_memory_allocated`` on a GPU, the
  process's peak RSS (VmHWM, reset before each measurement where the kernel allows) on a CPU.

Prints a table and writes JSON to ``--output`` (a CSV and Markdown table beside it); a
measurement that fails is reported under ``errors`` and makes the command exit with 1.
``--quick``: one epoch of a few batches, 32-bit, the offline model only (a fresh one,
trained for those few batches, when ``--models`` is not given), one timed inference run on
the 30 s sample: seconds on a CPU, for the test suite.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import AMI, ROOT, demo_corpus, machine, write_table
from decoder import ensure_decoder

sys.path.insert(0, str(ROOT))  # diartune itself, where it is not installed (a bare machine)

PRECISIONS = ("32", "16-mixed")
ARCHITECTURES = ("offline", "pyannote-size")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--database", help="database.yml (default: the demo corpus)")
    parser.add_argument("--protocol", help="its protocol (with --database)")
    parser.add_argument("--models", help="folder with segmentation.ckpt and embedding.ckpt")
    parser.add_argument("--audio", action="append", help="recording(s) for inference")
    parser.add_argument("--output", default="bench-output/gpu/gpu.json", help="JSON file")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, help="cap on training batches per epoch")
    parser.add_argument(
        "--copies", type=int, default=32, help="times the demo's train subset is listed"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="timed inference runs")
    parser.add_argument("--precisions", help="comma-separated (default: all this device runs)")
    parser.add_argument("--architectures", default=",".join(ARCHITECTURES))
    parser.add_argument("--quick", action="store_true", help="tiny: for tests, on a CPU")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.batches, args.repeat, args.copies = 1, 3, 1, 2
        args.precisions, args.architectures = args.precisions or "32", "offline"
    return args


def training_corpus(demo: Path, copies: int) -> tuple[Path, str]:
    """The demo corpus's train subset with each conversation listed ``copies`` times.

    pyannote's training epoch holds (train audio) / (chunk duration) chunks: the demo's
    4 minutes make one batch of 32 x 5 s chunks, too few to time. Listing the same
    conversations under new names (their audio linked, not copied) makes the epoch
    ``copies`` times longer; chunks are drawn at random, so each costs what it did.
    """
    folder = demo.parent.with_name(f"{demo.parent.name}-train-x{copies}")
    database, name = folder / "database.yml", "Bench.SpeakerDiarization.Train"
    if database.exists():
        return database, name
    source = demo.parent
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    uris = (source / "train.lst").read_text().split()
    rttm = [line.split() for line in (source / "train.rttm").read_text().splitlines()]
    uem = [line.split() for line in (source / "train.uem").read_text().splitlines()]
    lists: dict[str, list[str]] = {"lst": [], "rttm": [], "uem": []}
    for copy in range(copies):
        for uri in uris:
            new = f"{uri}x{copy:03d}"
            link = folder / "audio" / f"{new}.wav"
            if not link.exists():
                link.symlink_to((source / "audio" / f"{uri}.wav").resolve())
            lists["lst"].append(new)
            for fields, kind, at in ((rttm, "rttm", 1), (uem, "uem", 0)):
                for line in fields:
                    if line[at] == uri:
                        lists[kind].append(" ".join([*line[:at], new, *line[at + 1 :]]))
    for kind, lines in lists.items():
        (folder / f"train.{kind}").write_text("\n".join(lines) + "\n")
    train = {"uri": "train.lst", "annotation": "train.rttm", "annotated": "train.uem"}
    database_name, task, protocol = name.split(".")
    config = {
        "Databases": {database_name: "audio/{uri}.wav"},
        "Protocols": {database_name: {task: {protocol: {"scope": "file", "train": train}}}},
    }
    database.write_text(json.dumps(config))  # YAML is a superset of JSON
    return database, name


# -- what a measurement costs in memory and time -------------------------------------------


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _reset_rss_peak() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS; False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_peak_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def peak_memory(into: dict[str, Any]) -> Iterator[None]:
    """Peak device memory of the block: CUDA's allocator on a GPU, peak RSS on a CPU."""
    import torch

    if _cuda():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    reset = _reset_rss_peak()
    yield
    if _cuda():
        torch.cuda.synchronize()
        into["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
        into["peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
        into["memory"] = "cuda max_memory_allocated"
    else:
        into["peak_memory_mib"] = _rss_peak_mib()
        into["memory"] = "peak RSS" if reset else "peak RSS since the process started"
    into["host_peak_rss_mib"] = _rss_peak_mib()


def _epoch_clock() -> Any:
    """A lightning callback that times each training epoch and counts its chunks."""
    import lightning
    import torch

    def now() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    class EpochClock(lightning.Callback):
        def __init__(self) -> None:
            self.epochs: list[dict[str, float]] = []

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self.start, self.first, self.chunks, self.batches = now(), 0.0, 0, 0
            self.first_chunks = 0

        def on_train_batch_end(
            self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            self.batches += 1
            self.chunks += int(batch["X"].shape[0])
            if self.batches == 1:
                self.first, self.first_chunks = now(), self.chunks

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            end = now()
            self.epochs.append(
                {
                    "seconds": end - self.start,
                    "batches": self.batches,
                    "chunks": self.chunks,
                    "steady_seconds": end - self.first,
                    "steady_chunks": self.chunks - self.first_chunks,
                }
            )

    return EpochClock()


# -- the measurements -----------------------------------------------------------------------


def _new_model(architecture: str) -> Any:
    from pyannote.audio.models.segmentation import PyanNet

    from diartune.trial.finetune import new_segmentation_model

    if architecture == "offline":
        return new_segmentation_model()
    # pyannote/segmentation-3.0's architecture (its config.yaml), untrained.
    return PyanNet(
        sincnet={"stride": 10},
        lstm={
            "hidden_size": 128,
            "num_layers": 4,
            "bidirectional": True,
            "monolithic": True,
            "dropout": 0.5,
        },
        linear={"hidden_size": 128, "num_layers": 2},
    )


def measure_fine_tune(
    protocol: Any,
    start: Callable[[], Any],
    model_name: str,
    precision: str,
    args: argparse.Namespace,
    output: Path,
) -> dict[str, Any]:
    """Fine-tune a fresh copy of the model once; its throughput, per epoch and overall."""
    from diartune.spec.model import FineTune
    from diartune.spec.params import KNOWN
    from diartune.trial.device import available_cpus, loader_workers
    from diartune.trial.finetune import fine_tune

    params = {"training.batch_size": args.batch_size, "training.learning_rate": 1e-4}
    settings = FineTune(max_epochs=args.epochs, batches_per_epoch=args.batches, precision=precision)
    row: dict[str, Any] = {"model": model_name, "precision": precision}
    model = start()
    row["parameters"] = sum(p.numel() for p in model.parameters())
    clock = _epoch_clock()
    with peak_memory(row):
        began = time.perf_counter()
        fine_tune(model, protocol, params, settings, output, callbacks=[clock])
        row["fit_seconds"] = time.perf_counter() - began
    epochs = clock.epochs
    steady = epochs[1:] or epochs  # the first epoch also starts the loader and CUDA
    chunks = sum(e["chunks"] for e in steady)
    seconds = sum(e["seconds"] for e in steady)
    steady_seconds = sum(e["steady_seconds"] for e in steady)
    row |= {
        "epochs": len(epochs),
        "batches_per_epoch": epochs[0]["batches"],
        "batch_size": args.batch_size,
        "chunk_seconds": KNOWN["training.duration"].default,
        "loader_workers": loader_workers(available_cpus()),
        "first_epoch_seconds": epochs[0]["seconds"],
        "epoch_seconds": statistics.median(e["seconds"] for e in steady),
        "chunks_per_second": chunks / seconds,
        "steady_chunks_per_second": (
            sum(e["steady_chunks"] for e in steady) / steady_seconds
            if steady_seconds > 0
            else math.nan
        ),
    }
    return row


def _where(module: Any) -> str:
    return str(next(module.parameters()).device)


def measure_inference(
    segmentation_path: Path,
    embedding_path: Path,
    files: list[dict[str, Any]],
    model_name: str,
    repeat: int,
) -> dict[str, Any]:
    """Run the pipeline as a trial builds it (models loaded, build_pipeline, then
    ``pipeline.to(device())``)."""
    from diartune.spec.params import pipeline_defaults
    from diartune.storage import Storage, cache_root
    from diartune.trial.device import device
    from diartune.trial.models import load_model
    from diartune.trial.pipeline import build_pipeline, diarize

    storage, scratch = Storage(), cache_root()
    segmentation = load_model(str(segmentation_path), storage, scratch)
    embedding = load_model(str(embedding_path), storage, scratch)
    segmentation.eval()
    embedding.eval()
    clustering = "AgglomerativeClustering"
    pipeline = build_pipeline(
        segmentation, embedding, clustering, pipeline_defaults(clustering), tuned=set()
    )
    pipeline.to(device())
    row: dict[str, Any] = {
        "model": model_name,
        "segmentation_on": str(pipeline._segmentation.device),
        "embedding_on": _where(pipeline._embedding.model_),
        "audio_seconds": sum(f["waveform"].shape[1] / f["sample_rate"] for f in files),
    }
    diarize(pipeline, [dict(f) for f in files], None, {})  # warm-up: kernels, allocator
    runs = []
    with peak_memory(row):
        for _ in range(repeat):
            timings: dict[str, float] = {}
            began = time.perf_counter()
            diarize(pipeline, [dict(f) for f in files], None, timings)
            timings["pipeline"] = time.perf_counter() - began
            runs.append(timings)
    for step in ("segmentation", "embeddings", "pipeline"):
        seconds = statistics.median(t.get(step, math.nan) for t in runs)
        row[f"{step}_seconds"] = seconds
        row[f"{step}_rtf"] = seconds / row["audio_seconds"]
    return row


def _recordings(paths: list[str] | None, quick: bool) -> list[Path]:
    if paths:
        return [Path(p) for p in paths]
    development = sorted(AMI.glob("dev*.wav"))
    if development and not quick:
        return development
    import pyannote.audio

    return [Path(pyannote.audio.__file__).parent / "sample" / "sample.wav"]


def _load(path: Path) -> dict[str, Any]:
    from pyannote.audio import Audio

    waveform, rate = Audio(sample_rate=16000, mono="downmix")({"audio": str(path)})
    return {"uri": path.stem, "waveform": waveform, "sample_rate": rate}


def _environment(decoder: str) -> dict[str, Any]:
    import lightning
    import pyannote.audio
    import torch

    from diartune.trial.device import available_cpus, device

    where = device()
    name = torch.cuda.get_device_name(where) if where.type == "cuda" else platform.processor()
    return {
        "machine": machine(),
        "device": where.type,
        "device_name": name or "cpu",
        "cpus": available_cpus(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "lightning": lightning.__version__,
        "pyannote.audio": pyannote.audio.__version__,
        "audio_decoder": decoder,
    }


# -- the report -----------------------------------------------------------------------------


def _print_tables(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    title = f"{report['environment']['device_name']} ({report['environment']['device']})"
    training = Table(title=f"fine-tuning on {title}")
    for column in (
        "model",
        "precision",
        "s / epoch",
        "chunks / s",
        "steady chunks / s",
        "1st epoch s",
        "peak MiB",
    ):
        training.add_column(column, justify="left" if column in ("model", "precision") else "right")
    for row in report["fine_tune"]:
        training.add_row(
            row["model"],
            row["precision"],
            f"{row['epoch_seconds']:.2f}",
            f"{row['chunks_per_second']:.0f}",
            f"{row['steady_chunks_per_second']:.0f}",
            f"{row['first_epoch_seconds']:.2f}",
            f"{row['peak_memory_mib']:.0f}",
        )
    inference = Table(title=f"inference on {title} (seconds per second of audio)")
    for column in ("model", "on", "segmentation", "embeddings", "whole", "peak MiB"):
        inference.add_column(column, justify="left" if column[0] in "mo" else "right")
    for row in report["inference"]:
        inference.add_row(
            row["model"],
            f"{row['segmentation_on']} / {row['embedding_on']}",
            f"{row['segmentation_rtf']:.4f}",
            f"{row['embeddings_rtf']:.4f}",
            f"{row['pipeline_rtf']:.4f}",
            f"{row['peak_memory_mib']:.0f}",
        )
    console.print(training)
    console.print(inference)
    for error in report["errors"]:
        console.print(f"[red]failed[/red] {error['what']}: {error['error']}")


def _finite(value: Any) -> Any:
    return value if not isinstance(value, float) or math.isfinite(value) else None


def main() -> None:
    args = arguments()
    began = time.perf_counter()
    decoder = ensure_decoder()
    from diartune.storage import Storage, cache_root
    from diartune.trial.data import load_protocol, subset_files
    from diartune.trial.device import device
    from diartune.trial.models import build_resemblyzer_checkpoint, load_model

    if args.database:
        database, protocol_name = Path(args.database), args.protocol
    else:
        demo = demo_corpus()
        database, protocol_name = training_corpus(demo, args.copies)
    protocol = load_protocol(database, protocol_name, ("train",))
    subset_files(protocol, "train", load=False)
    precisions = (args.precisions or ",".join(PRECISIONS)).split(",")
    if device().type != "cuda":
        precisions = ["32"]  # fine_tune trains in 32-bit on a CPU whatever it is asked
    report: dict[str, Any] = {
        "environment": _environment(decoder),
        "quick": args.quick,
        "settings": {
            "epochs": args.epochs,
            "batches_per_epoch_cap": args.batches,
            "train_copies": None if args.database else args.copies,
            "batch_size": args.batch_size,
            "inference_repeat": args.repeat,
            "corpus": f"{database} {protocol_name}",
        },
        "fine_tune": [],
        "inference": [],
        "errors": [],
    }

    print(f"gpu: {json.dumps(report['environment'])}", flush=True)

    def attempt(what: str, measure: Callable[..., dict[str, Any]], *how: Any) -> dict | None:
        print(f"gpu: {what} ...", flush=True)
        try:
            row = measure(*how)
        except Exception as error:  # one failed measurement must not lose the others
            traceback.print_exc()
            report["errors"].append({"what": what, "error": f"{type(error).__name__}: {error}"})
            return None
        print(f"gpu: {what}: {json.dumps(row, default=str)}", flush=True)
        return row

    output = Path(args.output)

    def save() -> None:
        """Write the JSON (after each measurement: a run cut short keeps what it measured)."""
        report["seconds"] = time.perf_counter() - began
        output.parent.mkdir(parents=True, exist_ok=True)
        clean = json.loads(json.dumps(report, default=str))
        for rows in (clean["fine_tune"], clean["inference"]):
            for row in rows:
                row.update({k: _finite(v) for k, v in row.items()})
        output.write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n")

    with tempfile.TemporaryDirectory(prefix="diartune-gpu-") as scratch:
        folder = Path(scratch)
        if args.models:
            models = Path(args.models) / "segmentation.ckpt", Path(args.models) / "embedding.ckpt"
        elif args.quick:  # no trained model needed: the first fine-tuning makes one
            models = (
                folder / "segmentation.ckpt",
                build_resemblyzer_checkpoint(folder / "embedding.ckpt"),
            )
        else:
            from common import offline_models

            models = offline_models()
        files = [_load(path) for path in _recordings(args.audio, args.quick)]
        report["settings"]["recordings"] = [f["uri"] for f in files]

        def infer(architecture: str, checkpoint: Path) -> None:
            how = (checkpoint, models[1], files, architecture, args.repeat)
            row = attempt(f"inference {architecture}", measure_inference, *how)
            if row is not None:
                report["inference"].append(row)
            save()

        architectures = args.architectures.split(",")
        trained = models[0].exists()
        if trained and "offline" in architectures:
            infer("offline", models[0])  # first: the figures that need no training
        storage = Storage()
        for architecture in architectures:

            def start(architecture: str = architecture) -> Any:
                if architecture == "offline" and models[0].exists():
                    return load_model(str(models[0]), storage, cache_root())
                return _new_model(architecture)

            first = None
            for precision in precisions:
                checkpoint = folder / f"{architecture}-{precision}.ckpt"
                what = f"fine-tune {architecture} {precision}"
                how = (protocol, start, architecture, precision, args, checkpoint)
                row = attempt(what, measure_fine_tune, *how)
                if row is not None:
                    report["fine_tune"].append(row)
                    first = first or checkpoint
                save()
            if first is not None and not (architecture == "offline" and trained):
                infer(architecture, first)
    save()
    rows = [{"measurement": "fine_tune", **r} for r in report["fine_tune"]]
    rows += [{"measurement": "inference", **r} for r in report["inference"]]
    if rows:
        write_table(output.parent, output.stem, rows)
    _print_tables(report)
    print(
        f"gpu: {report['environment']['device_name']}, {len(report['fine_tune'])} fine-tunings, "
        f"{len(report['inference'])} inference runs, {len(report['errors'])} failed, "
        f"{report['seconds']:.0f} s; {output}",
        flush=True,
    )
    if report["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
