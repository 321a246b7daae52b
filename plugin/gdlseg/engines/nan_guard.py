"""Stop a training at the first NaN or infinite loss, with an error that says where and what is kept.

Ignite's ``TerminateOnNan`` ends the engine as if training had completed: the MLflow run would end
FINISHED and a final checkpoint of the diverged model would be written. :class:`StopOnNonFiniteLoss`
raises :class:`~gdlseg.engines.errors.NonFiniteLossError` instead, right after the loss is computed and before the
backward pass and the optimizer step, so that

- the run ends FAILED (the error becomes the MLflow tag ``gdlseg.error``);
- :class:`gdlseg.engines.checkpoints.SafeCheckpointSaver` does not write ``checkpoint_final.pt``
  from this state: the newest ``checkpoint_epoch=N.pt`` (finite weights, end of the last complete
  epoch) stays the one ``resume`` picks.
"""

from __future__ import annotations

import os

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys

from gdlseg.engines.checkpoints import latest_checkpoint
from gdlseg.engines.errors import NonFiniteLossError


class StopOnNonFiniteLoss:
    """Raise :class:`NonFiniteLossError` when a MONAI trainer's loss is not finite.

    Args:
        models_dir: where the checkpoints are; the error names the one a resume would use.
    """

    def __init__(self, models_dir: os.PathLike | str | None = None) -> None:
        self.models_dir = models_dir

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        loss = engine.state.output[CommonKeys.LOSS]
        if bool(torch.isfinite(loss.detach()).all()):
            return
        state = engine.state
        within = (state.iteration - 1) % state.epoch_length + 1 if state.epoch_length else state.iteration
        kept = latest_checkpoint(self.models_dir) if self.models_dir is not None else None
        advice = (
            f"The last good checkpoint is {kept}: resume from it (resume=true) with a lower learning rate "
            "or after checking the data."
            if kept
            else "No checkpoint was saved before it."
        )
        raise NonFiniteLossError(
            f"The training loss is {loss.detach().float().mean().item()} at epoch {state.epoch}, iteration "
            f"{state.iteration} ({within} of {state.epoch_length} in the epoch): training stopped before this "
            f"step changed the weights, and no final checkpoint is written from this state. {advice}"
        )
