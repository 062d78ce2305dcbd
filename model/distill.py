"""The distillation API in one import: a facade over the modules that implement it.

``from inhibitron.model import distill`` keeps working for scripts written
against the single-module layout; new code imports from the module that
owns each job:

* :mod:`~inhibitron.model.recipes` -- the recipe registry, the recipes, ``default_config``;
* :mod:`~inhibitron.model.distill_config` -- :class:`DistillConfig`, the typed configuration;
* :mod:`~inhibitron.model.training` -- the training loop (:func:`train`, :class:`Phase`);
* :mod:`~inhibitron.model.losses` -- the loss terms and the layer hooks they need;
* :mod:`~inhibitron.model.schedule` -- steps per phase, learning rate, data order;
* :mod:`~inhibitron.model.train_checkpoint` -- resumable checkpoints (:class:`CheckpointError`);
* :mod:`~inhibitron.model.train_metrics` -- ``metrics.jsonl`` and the loss plot;
* :mod:`~inhibitron.model.classifier` -- classifier teachers and students (task recipes).
"""

from __future__ import annotations

from .classifier import classifier_student, load_classifier
from .losses import LossTerm, layer_trainable_names
from .recipes import (
    distill_full,
    distill_layerwise,
    distill_task,
    finetune,
    finetune_qat,
)
from .schedule import lr_factor, phase_steps
from .train_checkpoint import CheckpointError, latest_checkpoint
from .train_metrics import plot_losses, read_metrics
from .training import Phase, train

__all__ = [
    "CheckpointError",
    "LossTerm",
    "Phase",
    "classifier_student",
    "distill_full",
    "distill_layerwise",
    "distill_task",
    "finetune",
    "finetune_qat",
    "latest_checkpoint",
    "layer_trainable_names",
    "load_classifier",
    "lr_factor",
    "phase_steps",
    "plot_losses",
    "read_metrics",
    "train",
]
