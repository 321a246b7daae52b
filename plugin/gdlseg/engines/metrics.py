"""Per-class Dice as an Ignite metric for MONAI's evaluators."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced

from gdlseg.data.datalist import case_name
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
        self._scores: list[torch.Tensor] = []
        self.case_scores: list[dict] = []

    @reinit__is_reduced
    def update(self, output) -> None:
        predictions, labels = output[0], output[1]
        for prediction, label in zip(predictions, labels):
            scores = dice_per_class(
                _labels(prediction).unsqueeze(0).cpu(), _labels(label).unsqueeze(0).cpu(), len(self.class_names)
            )[0]
            self._scores.append(scores[1:])
            meta = getattr(label, "meta", {}) or getattr(prediction, "meta", {})
            name = case_name(meta.get("filename_or_obj", f"case_{len(self.case_scores):04d}"))
            self.case_scores.append(
                {"case": name, **{cls: float(s) for cls, s in zip(self.class_names[1:], scores[1:].tolist())}}
            )

    def per_class(self) -> torch.Tensor:
        """``(C − 1,)`` mean Dice of each foreground class over cases (NaN if never scored)."""
        if not self._scores:
            return torch.full((len(self.class_names) - 1,), float("nan"), dtype=torch.float64)
        return torch.nanmean(torch.stack(self._scores), dim=0)

    def compute(self) -> float:
        return float(torch.nanmean(self.per_class()))

    def completed(self, engine: Engine, name: str) -> None:
        super().completed(engine, name)
        for class_name, value in zip(self.class_names[1:], self.per_class().tolist()):
            engine.state.metrics[f"{self.prefix}_{class_name}"] = value
