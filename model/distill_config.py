"""The configuration of one distillation run: :class:`DistillConfig`, typed, frozen, validated.

One dataclass configures every recipe; each recipe's paper defaults live
with the recipe in :mod:`inhibitron.model.recipes`, which also holds
:func:`~inhibitron.model.recipes.default_config` ("generate a default
config, edit, pass it in"). Here: the fields, their meaning and their
validation, and the JSON form stored in run records and checkpoints.

This module does not import PyTorch (the CLI reads it to build its flags).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["SCHEDULES", "DistillConfig"]

#: Learning-rate schedules after the linear warm-up.
SCHEDULES = ("cosine", "linear", "constant")

#: What the training examples of a text corpus are (``DistillConfig.text_unit``,
#: :func:`inhibitron.model.data.text_dataset`): ``"window"``, each paragraph cut into
#: windows of at most ``max_length`` tokens; ``"sentence"``, each sentence of a paragraph on
#: its own (cut the same way when longer); ``"both"``, the two sets together.
TEXT_UNITS = ("window", "sentence", "both")


@dataclass(frozen=True)
class DistillConfig:
    """Hyperparameters of one recipe run (the paper's values: ``recipes.default_config``).

    Parameters
    ----------
    recipe : str
        A registered recipe name (:func:`~inhibitron.model.recipes.recipe_names`).
    epochs : float
        Passes over the training data; for ``layerwise`` *per layer*.
        Fractions are allowed (short runs).
    batch_size : int
        Sequences per micro-batch, summed over all data-parallel processes
        (the global micro-batch); must be divisible by the number of processes.
    grad_accum : int
        Micro-batches per optimizer step (effective batch ``batch_size * grad_accum``).
    lr : float
        Peak learning rate of AdamW.
    weight_decay : float
        AdamW decoupled weight decay.
    adam_beta1, adam_beta2, adam_eps : float
        AdamW moments and epsilon.
    warmup_ratio : float
        Fraction of each phase's optimizer steps with linear warm-up from 0.
    schedule : str
        Decay after warm-up, one of :data:`SCHEDULES`.
    max_grad_norm : float
        Clip the global gradient norm (0 disables).
    max_steps : int or None
        Cap on optimizer steps per phase (per layer for ``layerwise``); the
        schedule is laid out over the capped length.
    seed : int
        Seeds parameter init of new heads, data order and dropout.
    max_length : int
        Tokens per sequence window (special tokens included).
    text_unit : str
        What a training example of a text corpus is, one of :data:`TEXT_UNITS`:
        ``"window"`` (the paper's: paragraphs cut into ``max_length``-token
        windows), ``"sentence"`` (each sentence on its own, the unit a
        sentence-embedding model is used on) or ``"both"``. Labelled data ignores it.
    layer_input : str
        ``layerwise`` only: what the trained layer sees, ``"student"`` (its own
        lower, already distilled layers: the thesis code) or ``"teacher"``
        (the teacher's hidden state: decoupled layers).
    layers : tuple of int or None
        ``layerwise`` only: the layers to distil, bottom-up; None = all.
    fit_eta : bool
        ``layerwise`` only: before a layer trains, set each head's output
        scale eta to its least-squares fit to the teacher's context on the
        phase's first optimizer step of data (closed form; an addition of
        ours: the inhibitor sums over keys where softmax averages, so eta=1
        starts about ``n`` times too large and AdamW at 5e-4 needs thousands
        of steps to shrink it). False reproduces the thesis.
    fit_scalars : bool
        ``layerwise`` phases only: before a layer trains (and before the eta
        fit), pick each head's gamma and delta from a small grid
        (:data:`~inhibitron.model.losses.GAMMA_GRID` x
        :data:`~inhibitron.model.losses.DELTA_GRID`), each point with its
        least-squares eta, by the context error on the phase's first optimizer
        step of data (ours: AdamW moves a scalar by about ``lr`` per step, so
        gamma and delta hardly leave their initial values otherwise).
    scalar_lr_mult : float
        Learning rate of the inhibitor's per-head gamma and delta (alpha)
        relative to ``lr`` (ours; 1 reproduces the thesis). eta keeps ``lr``:
        after its least-squares fit it is of order ``1/n``, and 100 x lr
        overshoots it (measured: worse than 1 x; ``docs/distillation.md``).
    student_dropout : bool
        Run the student in training mode (dropout on) while it trains. False
        keeps it in eval mode like the teacher, so both see the same
        deterministic network (ours, for the distillation recipes).
    bf16 : bool
        Run the forward passes and losses of training under ``torch.autocast``
        with bfloat16 (GPUs; parameters, optimizer and the loss sums stay float32).
    full_epochs, full_lr, full_max_steps : float, float, int or None
        ``layerwise_full`` only: epochs, peak learning rate and step cap of
        its final ``full`` phase (the layer phases use ``epochs``, ``lr``, ``max_steps``).
    alpha_cos : float
        ``full`` and the full phase of ``layerwise_full``: weight of ``1 - cos`` between the
        teacher's and the student's mean-pooled last hidden states, per sequence (the
        sentence embedding; ours; 0 = the paper's hidden-state MSE alone).
    alpha_sim : float
        The same phases: weight of the similarity-structure term, per sequence: the mean
        over the other sequences of the micro-batch (of one process) of the squared
        difference between the teacher's and the student's cosine similarity of the two
        mean-pooled embeddings (ours; 0 = off).
    temperature : float
        ``task`` only: softmax temperature of the soft targets.
    alpha_kd, alpha_hidden : float
        ``task`` only: weights of the KL term and of the hidden-state MSE.
    log_every : int
        Optimizer steps between progress-bar/metric updates of the plot.
    checkpoint_every : int
        Optimizer steps between checkpoints (0: only at the end of each phase).
    keep_checkpoints : int
        Most recent checkpoints kept on disk (>= 1).
    """

    recipe: str = "layerwise"  # a registered recipe name
    epochs: float = 2.0  # passes over the data (per layer for layerwise)
    batch_size: int = 8  # global sequences per micro-batch
    grad_accum: int = 4  # micro-batches per optimizer step
    lr: float = 5e-4  # AdamW peak learning rate
    weight_decay: float = 0.0  # AdamW weight decay (HF Trainer default)
    adam_beta1: float = 0.9  # HF Trainer default
    adam_beta2: float = 0.999  # HF Trainer default
    adam_eps: float = 1e-8  # HF Trainer default
    warmup_ratio: float = 0.05  # linear warm-up fraction of the phase
    schedule: str = "cosine"  # decay after warm-up
    max_grad_norm: float = 1.0  # gradient clipping (HF Trainer default)
    max_steps: int | None = None  # cap on optimizer steps per phase
    seed: int = 42  # thesis seed
    max_length: int = 128  # tokens per window
    text_unit: str = "window"  # training examples of a corpus: windows, sentences or both
    layer_input: str = "student"  # layerwise: input of the trained layer
    layers: tuple[int, ...] | None = None  # layerwise: which layers (None = all)
    fit_eta: bool = True  # layerwise: least-squares eta before each layer trains
    fit_scalars: bool = False  # layerwise: per-head grid init of gamma/delta before each layer
    scalar_lr_mult: float = 1.0  # lr of gamma/delta relative to lr
    student_dropout: bool = True  # student in training mode (dropout) while it trains
    bf16: bool = False  # autocast the training forward passes to bfloat16
    full_epochs: float = 1.0  # layerwise_full: epochs of the final full phase
    full_lr: float = 3e-4  # layerwise_full: peak lr of the final full phase
    full_max_steps: int | None = None  # layerwise_full: step cap of the final full phase
    alpha_cos: float = 0.0  # full phases: weight of the pooled-embedding cosine term
    alpha_sim: float = 0.0  # full phases: weight of the in-batch similarity-structure term
    temperature: float = 4.0  # task: soft-target temperature
    alpha_kd: float = 0.5  # task: weight of the KL term
    alpha_hidden: float = 0.5  # task: weight of the hidden-state MSE
    log_every: int = 10  # steps between plot/log refreshes
    checkpoint_every: int = 200  # steps between checkpoints (0 = end of phase only)
    keep_checkpoints: int = 2  # checkpoints kept

    def __post_init__(self):
        def bad(name, what):
            raise ValueError(f"{name} must be {what}, not {getattr(self, name)!r}")

        # The registry (torch-free); it imports this module, hence the late import.
        from .recipes import recipe_names

        if self.recipe not in recipe_names():
            bad("recipe", f"one of {recipe_names()}")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"one of {SCHEDULES}")
        if self.text_unit not in TEXT_UNITS:
            bad("text_unit", f"one of {TEXT_UNITS}")
        if self.layer_input not in ("student", "teacher"):
            bad("layer_input", "'student' or 'teacher'")
        for name in ("batch_size", "grad_accum", "max_length", "log_every", "keep_checkpoints"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                bad(name, "a positive integer")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            bad("checkpoint_every", "an integer >= 0")
        for name in ("max_steps", "full_max_steps"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                bad(name, "a positive integer or None")
        if not isinstance(self.seed, int) or self.seed < 0:
            bad("seed", "an integer >= 0")
        for name, lo, hi in (
            ("epochs", 0.0, math.inf), ("lr", 0.0, math.inf), ("temperature", 0.0, math.inf),
            ("adam_eps", 0.0, math.inf), ("scalar_lr_mult", 0.0, math.inf), ("full_epochs", 0.0, math.inf),
            ("full_lr", 0.0, math.inf),
        ):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not (lo < v < hi):
                bad(name, "a positive number")
        for name in ("weight_decay", "max_grad_norm", "alpha_kd", "alpha_hidden", "alpha_cos", "alpha_sim"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not (0.0 <= v < math.inf):
                bad(name, "a number >= 0")
        for name in ("warmup_ratio", "adam_beta1", "adam_beta2"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not (0.0 <= v < 1.0):
                bad(name, "a number in [0, 1)")
        for name in ("fit_eta", "fit_scalars", "student_dropout", "bf16"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "a bool")
        if self.layers is not None:
            layers = tuple(self.layers)
            if not layers or any(not isinstance(i, int) or i < 0 for i in layers):
                bad("layers", "a non-empty tuple of layer indices >= 0, or None")
            if list(layers) != sorted(set(layers)):
                bad("layers", "strictly increasing (bottom-up)")
            object.__setattr__(self, "layers", layers)
        if self.recipe == "task" and self.alpha_kd == 0 and self.alpha_hidden == 0:
            raise ValueError("alpha_kd and alpha_hidden are both 0: the task recipe would have no loss")

    # -- serialisation (checkpoints, run records) ---------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        d = dataclasses.asdict(self)
        if d["layers"] is not None:
            d["layers"] = list(d["layers"])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DistillConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DistillConfig fields {unknown}")
        d = dict(data)
        if d.get("layers") is not None:
            d["layers"] = tuple(d["layers"])
        return cls(**d)

    #: Fields that do not change the training trajectory (may differ on resume).
    RUNTIME_FIELDS = ("log_every", "checkpoint_every", "keep_checkpoints")

    def trajectory_diff(self, other: DistillConfig) -> list[str]:
        """Names of the fields that differ and would change the training trajectory."""
        return [
            f.name for f in fields(self)
            if f.name not in self.RUNTIME_FIELDS and getattr(self, f.name) != getattr(other, f.name)
        ]

