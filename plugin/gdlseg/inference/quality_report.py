"""A batch's quality flags (:mod:`gdlseg.inference.quality`) gathered: ``quality.json`` beside the outputs,
the MLflow metrics and the console lines of ``gdlseg infer``.

``quality.json``: ``cases_segmented``, ``cases_flagged`` (cases with at least one flag),
``cases_with_flag`` (per flag code, how many cases have it), ``notes`` (each distinct note once) and per
segmented case its ``uncertainty`` score and ``uncertainty_source``, ``flagged`` and its ``flags`` (code and
message). Case names are the only names in it: no path, no identifier.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from gdlseg.data.atomic import atomic_path
from gdlseg.inference.quality import FLAG_CODES

QUALITY_FILE = "quality.json"


class Outcome(Protocol):
    """What is read of a :class:`gdlseg.inference.batch.CaseOutcome`."""

    case: str
    quality: dict[str, Any] | None

    @property
    def ok(self) -> bool: ...


def is_flagged(outcome: Outcome) -> bool:
    """A segmented case with at least one quality flag."""
    return bool(outcome.ok and outcome.quality and outcome.quality["flags"])


def _checked(outcomes: Sequence[Outcome]) -> list[Outcome]:
    return [outcome for outcome in outcomes if outcome.ok and outcome.quality is not None]


def batch_quality(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """``quality.json``'s content (module docstring)."""
    checked = _checked(outcomes)
    codes = [{flag["code"] for flag in outcome.quality["flags"]} for outcome in checked]
    notes = dict.fromkeys(note for outcome in checked for note in outcome.quality["notes"])
    return {
        "cases_segmented": len(checked),
        "cases_flagged": sum(map(is_flagged, checked)),
        "cases_with_flag": {code: sum(code in found for found in codes) for code in FLAG_CODES},
        "notes": list(notes),
        "cases": [
            {
                "case": outcome.case,
                "uncertainty": outcome.quality["uncertainty"]["score"],
                "uncertainty_source": outcome.quality["uncertainty"]["source"],
                "flagged": is_flagged(outcome),
                "flags": [{"code": flag["code"], "message": flag["message"]} for flag in outcome.quality["flags"]],
            }
            for outcome in checked
        ],
    }


def write_quality_summary(output_dir: Path, outcomes: Sequence[Outcome]) -> Path | None:
    """``quality.json`` in ``output_dir``, written atomically; None when no case was segmented with checks."""
    if not _checked(outcomes):
        return None
    path = output_dir / QUALITY_FILE
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(batch_quality(outcomes), indent=2) + "\n", encoding="utf-8")
    return path


def quality_metrics(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """MLflow metrics: ``cases_flagged``, ``cases_flagged_<code>`` for every flag code (0 included), and
    ``uncertainty_mean`` over the cases that have a score (absent when none has)."""
    summary = batch_quality(outcomes)
    metrics = {"cases_flagged": float(summary["cases_flagged"])}
    metrics.update({f"cases_flagged_{code}": float(count) for code, count in summary["cases_with_flag"].items()})
    scores = [case["uncertainty"] for case in summary["cases"] if case["uncertainty"] is not None]
    if scores:
        metrics["uncertainty_mean"] = sum(scores) / len(scores)
    return metrics


def summary_lines(outcomes: Sequence[Outcome], fail_on_flags: bool) -> list[str]:
    """The console lines: each flagged case with its flags, a count, and each distinct note once."""
    summary = batch_quality(outcomes)
    lines = []
    for case in summary["cases"]:
        lines += [f"  flagged: {case['case']}: {flag['code']}: {flag['message']}" for flag in case["flags"]]
    if summary["cases_flagged"]:
        counted = "; counted as failed (--fail-on-flags)" if fail_on_flags else ""
        lines.append(f"  {summary['cases_flagged']} case(s) flagged by the quality checks ({QUALITY_FILE}){counted}")
    lines += [f"  quality note: {note}" for note in summary["notes"]]
    return lines
