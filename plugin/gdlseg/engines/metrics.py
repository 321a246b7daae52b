"""Per-class Dice as an Ignite metric for MONAI's evaluators, gathered across distributed ranks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced

from gdlseg.data.datalist import case_name
from gdlseg.data.distributed import interleave
from gdlseg.evaluation.dice import dice_per_class


def _labels(tensor: torch.Tensor) -> torch.Tensor:
    """A ``(C, *spatial)`` prediction/one-hot, or a ``(1, *spatial)`` label map → ``(*spatial)`` labels."""
    return tensor.argmax(dim=0) if tensor.shape[0] > 1 else tensor[0].round()


class PerClassDice(Metric):
    """Dice of every foreground class on whole volumes, and their mean.

    Each iteration's output is ``(pred, label)``: batches or lists of ``(C, *spatial)``
    probabilities/one-hot predictions and ``(1, *spatial)`` label maps. ``compute()`` returns the mean
    over foreground classes of the per-class means over cases (cases where a class is absent from both
    prediction and reference are left out of that class's mean). When attached, the engine's metrics
    also get ``<prefix>_<class_name>`` for every foreground class, and ``case_scores`` keeps the
    per-case table for reports.

    Distributed runs: in an initialised process group (torchrun) each rank scores its own cases, and
    the first of ``compute()``, ``per_class()`` or ``case_scores`` after an update gathers every rank's
    cases. That is a collective: every rank must make the call, as Ignite does when the epoch
    completes (a report reading ``case_scores`` on rank 0 afterwards is served from the gathered copy).
    The values are then exactly those of one process scoring every case, provided each case is scored
    once: validate each rank's :func:`~gdlseg.data.distributed.validation_share` (cases r, r + W, …;
    the order of MONAI's ``DistributedSampler(even_divisible=False, shuffle=False)``), which also makes
    ``case_scores`` follow the dataset order (see :func:`~gdlseg.data.distributed.interleave`); shares
    padded to even out the ranks (``even_divisible=True``) repeat cases, and they would count twice.

    Args:
        class_names: one name per output channel, background first.
        prefix: metric name prefix, e.g. "val_dice".
        output_transform: Ignite output transform (MONAI's ``from_engine(["pred", "label"])``).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        prefix: str = "val_dice",
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
    ) -> None:
        if len(class_names) < 2:
            raise ValueError(f"class_names needs background and at least one class, got {list(class_names)}.")
        self.class_names = list(class_names)
        self.prefix = prefix
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        # One (case row, (C − 1,) foreground scores) pair per case scored on this rank.
        self._local_cases: list[tuple[dict, torch.Tensor]] = []
        self._all_cases: list[tuple[dict, torch.Tensor]] | None = None

    @reinit__is_reduced
    def update(self, output) -> None:
        predictions, labels = output[0], output[1]
        for prediction, label in zip(predictions, labels):
            scores = dice_per_class(
                _labels(prediction).unsqueeze(0).cpu(), _labels(label).unsqueeze(0).cpu(), len(self.class_names)
            )[0][1:]
            meta = getattr(label, "meta", {}) or getattr(prediction, "meta", {})
            # Without a file name, number cases as one process would (rank r's i-th case is i·W + r).
            number = len(self._local_cases) * idist.get_world_size() + idist.get_rank()
            name = case_name(meta.get("filename_or_obj", f"case_{number:04d}"))
            row = {"case": name, **{cls: float(s) for cls, s in zip(self.class_names[1:], scores.tolist())}}
            self._local_cases.append((row, scores))
        self._all_cases = None

    def _cases(self) -> list[tuple[dict, torch.Tensor]]:
        """Every rank's cases: gathered once after the last update (a collective), or this rank's alone
        outside a process group."""
        if idist.get_world_size() == 1:
            return self._local_cases
        if self._all_cases is None:
            self._all_cases = interleave(idist.all_gather(self._local_cases))
        return self._all_cases

    @property
    def case_scores(self) -> list[dict]:
        """One row per case: ``{"case": name, <class name>: Dice, …}`` (NaN where a class is undefined)."""
        return [row for row, _ in self._cases()]

    def per_class(self) -> torch.Tensor:
        """``(C − 1,)`` mean Dice of each foreground class over cases (NaN if never scored)."""
        cases = self._cases()
        if not cases:
            return torch.full((len(self.class_names) - 1,), float("nan"), dtype=torch.float64)
        return torch.nanmean(torch.stack([scores for _, scores in cases]), dim=0)

    def compute(self) -> float:
        return float(torch.nanmean(self.per_class()))

    def completed(self, engine: Engine, name: str) -> None:
        super().completed(engine, name)
        for class_name, value in zip(self.class_names[1:], self.per_class().tolist()):
            engine.state.metrics[f"{self.prefix}_{class_name}"] = value
