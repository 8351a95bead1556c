"""diartune export and diartune report, on real records: an output folder and S3 (moto)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from recorded_tuning import FAILING, FILES, local_tuning, operator_tuning, publish_record, tuning

from diartune.cli import main
from diartune.records import RECORD_FILE, RESULT_FILE, FileScores, TrialRecord
from diartune.results.report import ACCEPTED_SPEC, percent, save_records, write_results
from diartune.search.study import Study
from diartune.spec.model import S3
from diartune.storage import Storage, join

BUCKET = "artifacts"


def run(*argv: str) -> int:
    """``diartune <argv>``, bad input guarded as the command guards it."""
    return main(list(argv))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Study]:
    """A finished tuning's output folder, as diartune tune leaves it."""
    path = tmp_path_factory.mktemp("tune") / "ami-tune"
    return path, local_tuning(path)


@pytest.fixture(scope="module")
def storage(s3_endpoint: str) -> Storage:
    """The S3 server, with a bucket for the operator's artifacts."""
    storage = Storage(S3(endpoint=s3_endpoint))
    storage.client.create_bucket(Bucket=BUCKET)
    return storage


@pytest.fixture(scope="module")
def operator(storage: Storage) -> tuple[str, Study]:
    """A finished operator tuning's artifacts: s3://artifacts/<namespace>/<tuning>."""
    root = f"s3://{BUCKET}/speech/ami-tune"
    return root, operator_tuning(storage, root)


def load(journal: Path) -> dict[str, optuna.Study]:
    storage = JournalStorage(JournalFileBackend(str(journal)))
    return {
        name: optuna.load_study(study_name=name, storage=storage)
        for name in optuna.get_all_study_names(storage)
    }


def check_journal(journal: Path, study: Study) -> None:
    """The exported studies hold exactly the study's search trials, as Optuna trials."""
    studies = load(journal)
    assert list(studies) == ["ami-tune/segmentation", "ami-tune/clustering"]
    summary = study.summary()
    for stage in study.spec.stages:
        exported = studies[f"ami-tune/{stage.name}"]
        assert exported.direction == optuna.study.StudyDirection.MINIMIZE
        records = sorted(study.finished(stage.name), key=lambda r: r.number)
        assert [t.user_attrs["trial"] for t in exported.trials] == [r.name for r in records]
        for trial, record in zip(exported.trials, records, strict=True):
            assert trial.params == record.params
            assert trial.user_attrs["stage"] == stage.name
            assert trial.user_attrs["state"] == record.state
            if record.state == "Failed":
                assert trial.state == TrialState.FAIL and trial.value is None
                assert trial.user_attrs["message"] == "exit code 137: out of memory"
                assert not any(key.startswith("der/") for key in trial.user_attrs)
            else:
                assert trial.state == TrialState.COMPLETE and trial.value == record.der
                assert [trial.user_attrs[f"der/{uri}"] for uri in FILES] == pytest.approx(
                    [record.der - 0.05, record.der, record.der + 0.05]
                )
        best = study.best(stage.name)
        assert best is not None and exported.best_trial.user_attrs["trial"] == best.name
        attributes = exported.user_attrs
        assert attributes["stage"] == stage.name and attributes["phase"] == "Succeeded"
        assert None not in (summary.test_der, summary.default_test_der, summary.default_der)
        assert attributes["testDer"] == summary.test_der
        assert attributes["defaultTestDer"] == summary.default_test_der
        assert attributes["defaultDer"] == summary.default_der
        assert attributes["bestTrial"] == summary.best_trial
        assert attributes[f"evaluation/{summary.best_trial}-test"] == summary.test_der
    clustering = studies["ami-tune/clustering"].trials
    assert FAILING in [t.user_attrs["trial"] for t in clustering if t.state == TrialState.FAIL]
    assert clustering[0].distributions == {
        "clustering.threshold": FloatDistribution(0.3, 1.3),
        "clustering.min_cluster_size": IntDistribution(1, 20),
        "clustering.method": CategoricalDistribution(["average", "centroid"]),
    }
    segmentation = studies["ami-tune/segmentation"].trials[0].distributions
    assert segmentation["training.learning_rate"] == FloatDistribution(1e-5, 1e-2, log=True)


def test_a_local_tuning_exports_one_study_per_stage_and_again_replaces_them(
    folder: tuple[Path, Study], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, study = folder
    journal = tmp_path / "journal.log"
    assert run("export", str(path), "--output", str(journal)) == 0
    check_journal(journal, study)
    assert "2 studies" in capsys.readouterr().out
    assert run("export", str(path), "--output", str(journal)) == 0
    check_journal(journal, study)  # replaced, not appended to


def test_an_operator_tuning_exports_from_its_s3_artifacts(
    operator: tuple[str, Study], s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, study = operator
    monkeypatch.chdir(tmp_path)
    assert run("export", root, "--s3-endpoint", s3_endpoint) == 0
    check_journal(tmp_path / "ami-tune.optuna.log", study)


def test_a_spec_file_stands_in_for_a_missing_spec_json(
    operator: tuple[str, Study], storage: Storage, tmp_path: Path
) -> None:
    _, study = operator
    copy = f"s3://{BUCKET}/speech/copied"
    for record in study.records:
        publish_record(storage, copy, record)
    given = tmp_path / "tuning.yaml"
    given.write_text(yaml.safe_dump(tuning().model_dump(mode="json", by_alias=True)))
    journal = tmp_path / "journal.log"
    endpoint = str(storage.s3.endpoint)
    assert (
        run("export", copy, "--spec", str(given), "-o", str(journal), "--s3-endpoint", endpoint)
        == 0
    )
    check_journal(journal, study)


def test_report_renders_the_summary_and_plot_from_s3_and_from_a_folder(
    operator: tuple[str, Study], folder: tuple[Path, Study], s3_endpoint: str, tmp_path: Path
) -> None:
    root, study = operator
    output = tmp_path / "report"
    assert run("report", root, "--s3-endpoint", s3_endpoint, "--output", str(output)) == 0
    path, local = folder
    assert run("report", str(path)) == 0
    for where, expected in ((output, study.summary()), (path, local.summary())):
        summary = json.loads((where / "summary.json").read_text("utf-8"))
        assert summary["tuning"] == "ami-tune" and summary["phase"] == "Succeeded"
        assert summary["bestDer"] == expected.best_der
        assert summary["testDer"] == expected.test_der
        assert summary["defaultTestDer"] == expected.default_test_der
        assert (summary["trials"], summary["failed"]) == (12, 1)
        assert summary["seconds"] > 0
        tuned = f"| tuned | {percent(expected.best_der)} | {percent(expected.test_der)} |"
        assert tuned in (where / "summary.md").read_text("utf-8")
        assert (where / "der.png").read_bytes().startswith(b"\x89PNG")


def test_report_leaves_the_files_that_tune_leaves(
    folder: tuple[Path, Study], tmp_path: Path
) -> None:
    """``diartune report`` writes the output folder as ``diartune tune`` ends by writing it:
    best.yaml, and der.png with the per-file panel beside the stages' panels."""
    path, study = folder
    source, tuned, reported = tmp_path / "ami-tune", tmp_path / "tuned", tmp_path / "reported"
    source.mkdir()
    tuned.mkdir()
    shutil.copy(path / ACCEPTED_SPEC, source / ACCEPTED_SPEC)

    def scored(record: TrialRecord) -> TrialRecord:  # errors file by file, for the panel
        if record.der is None:
            return record
        errors = [60 * record.der + k for k in (-1.0, 0.0, 1.0)]
        scores = FileScores(files="0" * 16, error=errors, total=[60.0] * 3)
        return record.model_copy(update={"scores": scores})

    records = [scored(record) for record in study.records]
    save_records(source, records)
    finished = Study(study.spec, records)
    write_results(tuned, "ami-tune", finished, 1.0)  # what LocalTuning.finish writes
    assert run("report", str(source), "--output", str(reported)) == 0
    assert (reported / "best.yaml").read_text() == (tuned / "best.yaml").read_text()

    def width(png: Path) -> int:  # the PNG header's IHDR width: 5 inches a panel
        return int.from_bytes(png.read_bytes()[16:20], "big")

    panels = len(study.spec.stages) + 1  # and the tuned pipeline against the defaults
    assert width(reported / "der.png") == width(tuned / "der.png") == 5 * panels * 110
    written, summary = (json.loads((f / "summary.json").read_text()) for f in (tuned, reported))
    assert {**written, "seconds": None} == {**summary, "seconds": None}


def test_a_missing_result_is_a_warning_and_its_trial_has_no_der_per_file(
    folder: tuple[Path, Study], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, study = folder
    best = study.best()
    assert best is not None and best.artifacts is not None
    result = Path(best.artifacts, RESULT_FILE)
    moved = result.with_name("moved.json")
    result.rename(moved)
    try:
        assert run("export", str(path), "-o", str(tmp_path / "journal.log")) == 0
    finally:
        moved.rename(result)
    assert f"diartune: {result}: no such file" in capsys.readouterr().err
    exported = load(tmp_path / "journal.log")[f"ami-tune/{best.stage}"]
    trial = next(t for t in exported.trials if t.user_attrs["trial"] == best.name)
    assert trial.value == best.der and not any(k.startswith("der/") for k in trial.user_attrs)


def bad_input(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one line ``diartune <argv>`` prints on stderr, having exited with 2."""
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_bad_input_names_the_file_or_field_at_fault(
    folder: tuple[Path, Study],
    storage: Storage,
    s3_endpoint: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, study = folder
    s3 = ("--s3-endpoint", s3_endpoint)
    journal = ("-o", str(tmp_path / "journal.log"))
    assert f"{tmp_path}/trials.json: no such file" in bad_input(capsys, "export", str(tmp_path))
    lost = f"s3://{BUCKET}/speech/lost"
    err = bad_input(capsys, "export", lost, *s3, *journal)
    assert f"{lost}/spec.json: no such file" in err and "--spec" in err
    err = bad_input(capsys, "report", "s3://no-such-bucket/speech/x", *s3, "--spec", "nope.yaml")
    assert "nope.yaml: no such file" in err
    given = tmp_path / "tuning.yaml"
    document = tuning().model_dump(mode="json", by_alias=True)
    document["spec"]["stages"][1]["searchSpace"]["clustering.threshold"]["low"] = 2.0
    given.write_text(yaml.safe_dump(document))
    err = bad_input(capsys, "export", str(path), "--spec", str(given), *journal)
    assert "spec.stages[1].searchSpace.clustering.threshold: low (2.0) must be less" in err

    garbled = f"s3://{BUCKET}/speech/garbled"
    storage.upload(path / "spec.json", join(garbled, "spec.json"))
    record = join(garbled, "trials", "clustering-000", RECORD_FILE)
    storage.upload(path / "trials.csv", record)
    assert f"{record}: Invalid JSON" in bad_input(capsys, "report", garbled, *s3)

    other = f"s3://{BUCKET}/speech/other-spec"
    storage.upload(path / "spec.json", join(other, "spec.json"))
    alien = study.records[0].model_copy(update={"stage": "vad"})
    publish_record(storage, other, alien)
    assert "trials of stages ['vad'], which the spec lacks" in bad_input(
        capsys, "export", other, *s3, *journal
    )

    missing = "s3://no-such-bucket/speech/x"
    given.write_text(yaml.safe_dump(tuning().model_dump(mode="json", by_alias=True)))
    err = bad_input(capsys, "export", missing, *s3, "--spec", str(given), *journal)
    assert f"{missing}: cannot list its trials" in err and "NoSuchBucket" in err


def test_the_files_read_are_those_the_drivers_and_trials_write() -> None:
    from diartune.results.report import ACCEPTED_SPEC
    from diartune.trial.run import RESULT_FILE as TRIAL_RESULT

    assert (RESULT_FILE, ACCEPTED_SPEC) == (TRIAL_RESULT, "spec.json")
