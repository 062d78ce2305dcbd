"""Sequence classifiers for the task recipes: load a fine-tuned teacher, build an inhibitor student.

* :func:`load_classifier` -- a fine-tuned ``BertForSequenceClassification`` /
  ``DistilBertForSequenceClassification`` teacher from a local folder;
* :func:`classifier_student` -- an inhibitor ``*ForSequenceClassification``
  student from a classifier, a base encoder or a saved student folder
  (the encoder weights are carried over, a new head is initialised).

Both produce logits (B, num_labels); ``num_labels=1`` is a regression task.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .surgery import (
    INHIBITOR_CONFIG_KEY,
    ModelFolderError,
    _check_model_folder,
    attention_modules,
    to_inhibitor,
)

__all__ = ["classifier_student", "load_classifier"]


def load_classifier(path: str | os.PathLike, *, num_labels: int | None = None):
    """Load a fine-tuned ``BertForSequenceClassification`` / ``DistilBertForSequenceClassification``
    teacher from a local folder (safetensors only, offline).

    Raises
    ------
    ModelFolderError
        Missing folder, not BERT/DistilBERT, no safetensors, not a sequence
        classifier, or a label count different from ``num_labels``.
    """
    from transformers import AutoModelForSequenceClassification

    folder = Path(path)
    cfg = _check_model_folder(folder)
    archs = cfg.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ModelFolderError(
            f"{str(folder)!r} is not a fine-tuned sequence classifier (architectures {archs}); "
            "task-specific distillation needs a *ForSequenceClassification teacher"
        )
    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True,
                                                               use_safetensors=True)
    if num_labels is not None and model.num_labels != num_labels:
        raise ModelFolderError(f"{str(folder)!r} predicts {model.num_labels} labels, the data has {num_labels}")
    model.eval()
    return model


def classifier_student(source, *, num_labels: int, variant: str = "valid", seed: int = 42):
    """An inhibitor ``*ForSequenceClassification`` student.

    Parameters
    ----------
    source : PreTrainedModel or path-like
        A classifier (teacher) to convert, a base encoder (teacher or
        distilled inhibitor student) to put a fresh head on, or a folder
        saved by ``save_student`` (e.g. ``<run>/student`` of a layer-wise run).
    num_labels : int
        Classes (1 = regression).
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        _check_model_folder(folder)
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        state = load_file(str(folder / "model.safetensors"))
    else:
        config = source.config
        state = None
        if hasattr(source, "classifier") and getattr(source, "num_labels", None) == num_labels:
            already = any(hasattr(m, "inhibitor") for _, _, m in attention_modules(source))
            return source if already else to_inhibitor(source, variant=variant)
        state = getattr(source, "base_model", source).state_dict()
    settings = getattr(config, INHIBITOR_CONFIG_KEY, None)
    variant = settings["variant"] if isinstance(settings, dict) else variant
    length_norm = settings.get("length_norm", "none") if isinstance(settings, dict) else "none"
    config = type(config).from_dict({**config.to_dict(), "num_labels": num_labels})
    if hasattr(config, INHIBITOR_CONFIG_KEY):
        delattr(config, INHIBITOR_CONFIG_KEY)
    model = AutoModelForSequenceClassification.from_config(config)
    student = to_inhibitor(model, variant=variant, length_norm=length_norm)
    base = student.base_model
    prefix = base.base_model_prefix if hasattr(base, "base_model_prefix") else ""
    clean = {}
    for k, v in state.items():
        if prefix and k.startswith(prefix + "."):
            k = k[len(prefix) + 1 :]
        clean[k] = v
    if settings is None:
        clean = {k: v for k, v in clean.items() if ".inhibitor." not in k}
    missing, unexpected = base.load_state_dict(clean, strict=False)
    missing = [m for m in missing if not (m.endswith("position_ids") or m.startswith("pooler.")
                                          or (settings is None and ".inhibitor." in m))]
    if missing or unexpected:
        raise ModelFolderError(f"encoder weights do not fit the classifier (missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]})")
    return student
