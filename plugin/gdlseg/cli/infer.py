"""``gdlseg infer``: segment NIfTI/NRRD/MetaImage scans, DICOM series or a datalist's images.

A case of several channels is a datalist entry whose "image" lists one file per channel, a 4D NIfTI
(channels last), or, for a network of several channels, the files <case>_0000.nii.gz,
<case>_0001.nii.gz, ... of an input folder (nnU-Net's naming); a case missing a channel fails alone.

For each input, OUTPUT receives ``<case>_seg.nii.gz`` (the label map with exactly the input's size,
spacing, origin and direction; uint8, uint16 above 256 classes), ``<case>_seg.json`` (provenance:
input and checkpoint SHA-256, versions, device, runtime, parameters; no patient identifier) and,
with --save-probabilities, ``<case>_probabilities.npz`` (float16). The case name is the file name
without extension, or the folder name of a DICOM series (several channels: channel 0's, without
_0000); their grid is channel 0's, and the provenance lists each channel file's SHA-256. Files
appear complete or not at all; inputs are never overwritten; a failed case is reported by name and
the others still finish (exit code 1).

DICOM SEG (docs/hospital-outputs.md): with --output-format dicom-seg (instead of the NIfTI label map)
or both, a DICOM series input also gets ``<case>_seg.dcm``, the label map on the source slices, one
segment per class. It carries the source's patient and study tags, so that a PACS files it with the
scan; nothing of them goes anywhere else. Every input must then be a DICOM series folder.

Fold ensembles: --ckpt takes several checkpoints, or a folder holding fold_*/models/model.pt (a
cross-validation's output; else the *.pt files directly inside it). Every window is segmented by each
model in turn and the mean of their softmax probabilities is blended and labelled (memory does not grow
with the number of models). The models must agree on classes, channels, spacing, intensity
normalisation, orientation and window size; a disagreement stops before anything is written. The
provenance lists every checkpoint's SHA-256.

Quality flags (docs/hospital-outputs.md): each provenance record holds an uncertainty score (the mean normalised
entropy of the probabilities over the voxels labelled foreground) and flags comparing the case with the
training data's ranges recorded in training.json: class_missing, volume_out_of_range, spacing_out_of_range,
intensity_out_of_range. OUTPUT/quality.json lists them per case; the summary names the flagged cases.
--fail-on-flags counts a flagged case as failed (exit code 1); its outputs are kept.

Tracking: each invocation is one MLflow run (job "infer"), tagged with the training run whose
mlflow_run.json lies next to the (first) checkpoint. Store: --tracking-uri, else $MLFLOW_TRACKING_URI, else
that training's store (the run lands beside its training, away from the label maps), else SQLite in
OUTPUT/mlflow. --no-tracking turns it off.

Several processes: --workers N hands the cases to N processes, each loading the model once (with --device
cuda, worker i on GPU i mod the GPU count; --workers gpus: one per GPU); the outputs are those of one
process, still one MLflow run and one summary; a worker that dies fails only its case.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from gdlseg.cli.common import EXIT_OK, EXIT_SOME_FAILED, UsageError, default_bundle
from gdlseg.cli.infer_workers import busy_devices, resolve_workers, segment, threads_per_process, worker_count


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "infer",
        help="segment scans (NIfTI, NRRD, MHA, DICOM series, datalists) with a trained checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--ckpt", type=Path, nargs="+", metavar="PATH",
        help="model.pt or checkpoint_*.pt written by training; several, or a folder of fold_*/models/model.pt "
        "(cross-validation), for an ensemble averaging their probabilities",
    )  # fmt: skip
    source.add_argument(
        "--model", metavar="URI",
        help="an MLflow model logged by gdlseg train: models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/model "
        "(from --tracking-uri or $MLFLOW_TRACKING_URI)",
    )  # fmt: skip
    parser.add_argument(
        "--input", required=True, nargs="+", type=Path, metavar="PATH",
        help="image files, folders of them (<case>_0000, _0001, ...: one case of several channels), DICOM series "
        "folders or datalist JSON files (an image may list one file per channel)",
    )  # fmt: skip
    parser.add_argument("--output", required=True, type=Path, help="folder for the label maps and provenance")
    parser.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the repository's)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument(
        "--workers", type=worker_count, default=1, metavar="N|gpus",
        help="segment the cases in N processes, each loading the model once (default 1: in this process); with "
        "--device cuda worker i uses GPU i mod the GPU count; gpus: one process per GPU",
    )  # fmt: skip
    parser.add_argument("--tta", action="store_true", help="average the 8 mirror images (8× slower)")
    parser.add_argument("--save-probabilities", action="store_true", help="also write float16 class probabilities")
    parser.add_argument("--num-classes", type=int, help="override the class count found with the checkpoint")
    parser.add_argument("--class-names", nargs="+", metavar="NAME", help="override the class names, background first")
    parser.add_argument(
        "--roi-size", nargs=3, type=int, metavar=("X", "Y", "Z"), help="window size (default: training's)"
    )
    parser.add_argument("--overlap", type=float, default=0.25, help="window overlap in [0, 1) (default 0.25)")
    parser.add_argument("--sw-batch-size", type=int, default=4, help="windows per network call (default 4)")
    parser.add_argument(
        "--blend", default="constant", choices=("constant", "gaussian"),
        help="how overlapping windows are weighted: their mean (constant, the default) or towards their centre",
    )  # fmt: skip
    parser.add_argument(
        "--precision", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
        help="autocast precision (auto: bf16 on CPUs with native bf16, fp16/bf16 on CUDA, else float32)",
    )  # fmt: skip
    parser.add_argument(
        "--postprocessing", default="auto", metavar="auto|none|FILE",
        help="per-class post-processing chosen by cross-validation (default auto: the postprocessing.json beside "
        "the models, if any: in the --ckpt folder or beside the first checkpoint file)",
    )  # fmt: skip
    parser.add_argument(
        "--output-format", default="nifti", choices=("nifti", "dicom-seg", "both"),
        help="the label map as <case>_seg.nii.gz (nifti, the default), as a DICOM SEG <case>_seg.dcm on the source "
        "series (dicom-seg; DICOM series inputs only; it holds the patient and study tags, for PACS), or both",
    )  # fmt: skip
    parser.add_argument("--series-uid", help="the DICOM series to read from a folder holding several")
    parser.add_argument(
        "--allow-irregular", action="store_true",
        help="DICOM: warn instead of failing on missing slices, uneven slice spacing or gantry tilt",
    )  # fmt: skip
    parser.add_argument("--dataset-dir", type=Path, default=None, help="base of relative paths in a datalist JSON")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: see above)")
    parser.add_argument("--experiment", help="MLflow experiment name (default: the training's, else gdlseg)")
    parser.add_argument("--run-name", help="MLflow run name (default: a unique generated name)")
    parser.add_argument("--no-tracking", action="store_true", help="do not create an MLflow run")
    parser.add_argument(
        "--fail-on-flags", action="store_true",
        help="a case with a quality flag counts as failed: exit code 1 (its outputs are kept)",
    )  # fmt: skip
    parser.set_defaults(handler=run, command="infer")
    return parser


def resolve_device(name: str):
    """``auto`` → CUDA when available else CPU; anything else as torch understands it."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UsageError(f"--device {name!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    return device


def prepare_output_folder(folder: Path) -> None:
    """Create ``folder`` and prove it can be written (before any work is done).

    Raises:
        UsageError: naming the folder and why it cannot be written.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".gdlseg-write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"--output {folder}: cannot write there ({error.strerror or error})") from None


def check_arguments(args: argparse.Namespace) -> None:
    if args.model is not None and not args.model.startswith(("models:/", "runs:/")):
        raise UsageError(
            f"--model {args.model}: expected models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/model"
        )
    if args.model is not None and args.postprocessing not in ("auto", "none"):
        raise UsageError("--postprocessing FILE applies to --ckpt models; an MLflow model is used as logged")
    if args.model is not None and not (args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        raise UsageError(f"--model {args.model}: give the store with --tracking-uri or $MLFLOW_TRACKING_URI")
    for path in args.ckpt or []:
        if not path.exists():
            raise UsageError(f"--ckpt {path}: no such file or folder")
    if not 0.0 <= args.overlap < 1.0:
        raise UsageError(f"--overlap must lie in [0, 1), got {args.overlap}")
    if args.sw_batch_size < 1:
        raise UsageError(f"--sw-batch-size must be at least 1, got {args.sw_batch_size}")
    if args.num_classes is not None and args.num_classes < 2:
        raise UsageError(f"--num-classes must be at least 2, got {args.num_classes}")
    if args.roi_size and min(args.roi_size) < 1:
        raise UsageError(f"--roi-size must be positive, got {args.roi_size}")


def run(args: argparse.Namespace) -> int:
    """Segment the inputs with the checkpoint of ``--ckpt``, or the MLflow model of ``--model``."""
    check_arguments(args)
    if args.model is None:
        return _run(args)
    with tempfile.TemporaryDirectory(prefix="gdlseg-model-") as folder:
        checkpoint, model_bundle = download_model(args.model, args.tracking_uri, Path(folder))
        args.ckpt = [checkpoint]
        args.bundle = args.bundle or model_bundle
        return _run(args)


def download_model(uri: str, tracking_uri: str | None, folder: Path) -> tuple[Path, Path]:
    """Download the gdlseg MLflow model ``uri`` into ``folder``; return its checkpoint and bundle.

    A run record (``mlflow_run.json``) is written beside the checkpoint, so that the inference run is
    tagged with the training run and lands in its store and experiment.

    Raises:
        UsageError: the registered model, alias, version or run does not exist, or is not a gdlseg model.
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from gdlseg.tracking import RUN_RECORD

    tracking_uri = tracking_uri or os.environ["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        source, run_id = _model_source(client, uri)
        local = Path(download_artifacts(artifact_uri=source, dst_path=str(folder), tracking_uri=tracking_uri))
        experiment = client.get_experiment(client.get_run(run_id).info.experiment_id).name
    except MlflowException as error:
        raise UsageError(f"--model {uri}: {str(error).splitlines()[0]}") from None
    checkpoint, bundle = local / "artifacts" / "checkpoint" / "model.pt", local / "artifacts" / "bundle"
    if not checkpoint.is_file() or not (bundle / "configs" / "train.yaml").is_file():
        raise UsageError(f"--model {uri}: not a model logged by gdlseg train (no checkpoint and bundle artifacts)")
    record = {"run_id": run_id, "tracking_uri": tracking_uri, "experiment": experiment}
    (checkpoint.parent / RUN_RECORD).write_text(json.dumps(record))
    return checkpoint, bundle


def _model_source(client, uri: str) -> tuple[str, str]:
    """The ``runs:/`` URI of the model's files and the id of the run that logged it.

    Raises:
        UsageError: a ``models:/`` URI without a name and an alias or version.
        MlflowException: no such registered model, alias, version or run.
    """
    if uri.startswith("runs:/"):
        return uri, uri.removeprefix("runs:/").split("/")[0]
    reference = uri.removeprefix("models:/")
    if "@" in reference:
        name, alias = reference.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    elif reference.count("/") == 1:
        name, number = reference.split("/")
        version = client.get_model_version(name, number)
    else:
        raise UsageError(f"--model {uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return version.source, version.run_id


def _run(args: argparse.Namespace) -> int:
    bundle = (args.bundle or default_bundle() or Path()).resolve()
    if not (bundle / "configs" / "train.yaml").is_file():
        raise UsageError(f"no bundle at {args.bundle or '(default)'}: pass --bundle with a folder holding configs/")
    device = resolve_device(args.device)
    args.worker_devices = resolve_workers(args.workers, device)
    from gdlseg.data.datalist import inference_inputs
    from gdlseg.inference import InferenceOptions, SlidingWindowSettings, checkpoint_files, load_ensemble
    from gdlseg.inference.batch import inference_parameters
    from gdlseg.inference.postprocessing import load_postprocessing

    try:
        checkpoints = checkpoint_files(args.ckpt)
    except ValueError as error:
        raise UsageError(f"--ckpt: {error}") from None
    # With worker processes this one only checks the models and records them: it keeps them on the CPU.
    model = load_ensemble(
        checkpoints,
        bundle,
        device if len(args.worker_devices) == 1 else "cpu",
        num_classes=args.num_classes,
        class_names=args.class_names,
        roi_size=args.roi_size,
    )
    try:
        postprocessing = load_postprocessing(None if args.model else args.postprocessing, args.ckpt, model.class_names)
    except ValueError as error:
        raise UsageError(f"--postprocessing: {error}") from None
    try:  # a network of several channels groups a folder's <case>_0000, _0001, … files by case
        cases = inference_inputs(args.input, args.dataset_dir or ".", channels=model.in_channels)
    except ValueError as error:
        raise UsageError(f"--input: {error}") from None
    if args.output_format != "nifti":
        from gdlseg.inference.dicom_seg import cases_without_dicom_series

        if not_dicom := cases_without_dicom_series(cases):
            raise UsageError(
                f"--output-format {args.output_format}: a DICOM SEG is made for DICOM series folders only; "
                f"not DICOM series: {', '.join(not_dicom)}"
            )
    prepare_output_folder(args.output)
    settings = SlidingWindowSettings(
        model.roi_size,
        overlap=args.overlap,
        sw_batch_size=args.sw_batch_size,
        mode=args.blend,
        precision=args.precision,
        tta=args.tta,
    )
    options = InferenceOptions(
        output_dir=args.output,
        settings=settings,
        probabilities=args.save_probabilities,
        series_uid=args.series_uid,
        allow_irregular=args.allow_irregular,
        postprocessing=postprocessing,
        output_format=args.output_format,
    )
    # An ensemble is identified by its checkpoints' digests, in order: no paths (its files are all model.pt).
    identity = {"checkpoint": args.model or checkpoints[0].name, "checkpoint_sha256": model.checkpoint_sha256}
    if model.members:
        identity = {"checkpoint_sha256": [member.checkpoint_sha256 for member in model.members]}
    devices = busy_devices(args.worker_devices, len(cases))
    params = {
        **identity,
        "cases": len(cases),
        "device": str(device),
        "workers": len(devices),
        "threads": threads_per_process(devices),
        "classes": model.class_names,
        "in_channels": model.in_channels,
        "channel_names": model.channel_names,
        **inference_parameters(model, options, args.worker_devices[0]),
        "fail_on_flags": args.fail_on_flags,
    }
    return _run_tracked(args, cases, model, options, params, bundle)


def _run_tracked(args, cases, model, options, params, bundle) -> int:
    from tqdm import tqdm

    from gdlseg.inference.batch import write_statistics_csv
    from gdlseg.inference.quality_report import is_flagged, quality_metrics, summary_lines, write_quality_summary
    from gdlseg.tracking import RunSettings, derived_run_tracking_uri, read_run_record, tracked_run

    training_record = read_run_record(model.training_run_record)
    start = time.perf_counter()
    settings = RunSettings(
        args.output,
        job="infer",
        tracking_uri=derived_run_tracking_uri(args.tracking_uri, args.no_tracking, training_record),
        experiment_name=args.experiment or training_record.get("experiment") or "gdlseg",
        run_name=args.run_name,
        params=params,
        tags={"gdlseg.bundle_version": model.bundle_version, **_ensemble_tags(model)},
        bundle_root=bundle,
        source_run_record=model.training_run_record,
    )
    with tracked_run(settings) as tracked:
        # mininterval=0: every case (seconds each) redraws the bar, so 100% is always shown before it closes.
        with tqdm(total=len(cases), desc="infer", unit="case", file=sys.stderr, leave=False, mininterval=0) as bar:

            def report(outcome) -> None:
                bar.update(1)
                if not outcome.ok:
                    tqdm.write(f"gdlseg infer: {outcome.case}: FAILED: {outcome.error}", file=sys.stderr)

            outcomes = segment(args, cases, model, options, report)
        done = [outcome for outcome in outcomes if outcome.ok]
        failed = [outcome for outcome in outcomes if not outcome.ok]
        seconds = time.perf_counter() - start
        metrics = {"cases_segmented": len(done), "cases_failed": len(failed), "seconds_total": seconds}
        if done:
            metrics["seconds_per_case"] = sum(outcome.seconds for outcome in done) / len(done)
        tracked.log_metrics(metrics)
        tracked.log_artifacts([path for outcome in done for path in outcome.outputs if path.name.endswith("_seg.json")])
        write_statistics_csv(args.output, outcomes)  # beside the outputs only: per-case values stay out of MLflow
        if failed:
            tracked.set_tags({"gdlseg.failed_cases": ",".join(outcome.case for outcome in failed)})
        flagged = [outcome for outcome in done if is_flagged(outcome)]
        tracked.log_metrics(quality_metrics(outcomes))
        tracked.log_artifacts([path for path in [write_quality_summary(args.output, outcomes)] if path])
        if flagged:
            tracked.set_tags({"gdlseg.flagged_cases": ",".join(outcome.case for outcome in flagged)})
    _print_summary(done, failed, seconds, args.output)
    for line in summary_lines(outcomes, args.fail_on_flags):
        print(line, file=sys.stderr)
    return EXIT_SOME_FAILED if failed or (flagged and args.fail_on_flags) else EXIT_OK


def _ensemble_tags(model) -> dict[str, str]:
    """An ensemble's training runs, every model's in order (``gdlseg.training_run_id`` is the first's)."""
    if not model.members:
        return {}
    return {"gdlseg.training_run_ids": ",".join(member.training_run_id or "" for member in model.members)}


def _print_summary(done, failed, seconds: float, output: Path) -> None:
    print(
        f"gdlseg infer: {len(done)} of {len(done) + len(failed)} case(s) segmented in {seconds:.1f} s "
        f"-> {os.fspath(output)}",
        file=sys.stderr,
    )
    for outcome in failed:
        print(f"  failed: {outcome.case}: {outcome.error}", file=sys.stderr)
