"""The distillation recipes of InhibiDistilbert, and the registry that lists them.

A recipe is a function registered with :func:`register`, which records
next to it everything the rest of the toolkit needs: its paper
hyperparameters (read by :func:`default_config`), where it comes from in the
paper, and what it trains on (read by ``inhibitron distill``, which builds
its ``--recipe`` choices, help and model/data set-up from
:func:`recipe_names` and :func:`get_recipe`). Adding a recipe is one
decorated function here (and its test).

The values are those of the InhibiDistilbert experiments (Zhang & Brännvall
2024, Tables 3-6), as set in the thesis code behind the paper (GitHub
``tonytonfisk2/MSc2024``); where each comes from is listed in
``docs/distillation.md``. The workflow is "generate a default config, edit,
pass it in"::

    >>> cfg = default_config("layerwise")
    >>> cfg.lr, cfg.epochs, cfg.batch_size, cfg.grad_accum, cfg.schedule
    (0.0005, 2.0, 8, 4, 'cosine')
    >>> cfg.fit_scalars, cfg.student_dropout  # ours, measured in docs/distillation.md
    (True, False)
    >>> import dataclasses
    >>> short = dataclasses.replace(cfg, max_steps=10)
    >>> short.max_steps
    10

Recipes, in the paper's order::

    distill_layerwise(teacher, student, data, config, out_dir)   layerwise  Exp. 1a
    distill_full(teacher, student, data, config, out_dir)        full       Exp. 1b
    distill_layerwise_full(...)                                  layerwise_full  Exp. 1a then 1b
    distill_task(teacher, student, data, config, out_dir)        task       Exp. 2
    finetune(student, data, config, out_dir)                     finetune   Table 6
    finetune_qat(student, data, config, out_dir, teacher=...)    qat        QAT (quant.qat)

Every recipe function also takes its arguments as keywords (``teacher``,
``student``, ``data``, ``config``, ``out_dir``, ``tokenizer``, ``env``,
``resume``, ``stop_after_steps``, ``progress``, ``run_info``), runs through
:func:`inhibitron.model.training.run_phases` and returns the metric history
(one dict per optimizer step); the run folder is described in
:mod:`inhibitron.model.training`.

This module does not import PyTorch at import time (the CLI reads the
registry to build ``inhibitron --help``): the recipe functions import the
training code when they run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .distill_config import SCHEDULES, DistillConfig

__all__ = [
    "DEFAULT_RECIPE",
    "REGISTRY",
    "SCHEDULES",
    "DistillConfig",
    "Recipe",
    "default_config",
    "distill_full",
    "distill_layerwise",
    "distill_layerwise_full",
    "distill_task",
    "finetune",
    "finetune_qat",
    "get_recipe",
    "recipe_names",
    "register",
]

#: What a recipe trains on: an unlabelled corpus, labelled examples (GLUE/IMDb), or either.
DATA_KINDS = ("text", "labelled", "either")


@dataclass(frozen=True)
class Recipe:
    """One registered recipe: the function and what its callers need to know about it.

    Members
    -------
    name : str
        ``DistillConfig.recipe`` and the CLI's ``--recipe`` value.
    function : callable
        The recipe, called with keywords (see the module docstring).
    defaults : mapping
        The paper's values of :class:`DistillConfig` fields for this recipe.
    source : str
        Where it comes from in the paper (``"Exp. 1a"``), shown in the CLI help; may be empty.
    data : str
        One of :data:`DATA_KINDS`. ``"text"``: teacher and student are encoders
        (``BertModel``/``DistilBertModel`` and its inhibitor twin) and the data a
        corpus; ``"labelled"``: the student is a ``*ForSequenceClassification``
        model and the data labelled; ``"either"``: labelled when the user gives labelled data.
    classifier_teacher : bool
        With labelled data, distil from a fine-tuned classifier teacher (required);
        otherwise labelled runs have no teacher.
    fake_quant : bool
        The function takes ``fake_quant=`` (a model -> model swap to fake-quantized
        attention, built by the caller from :mod:`inhibitron.quant.qat`).
    int8_fidelity : bool
        After the run, the CLI also measures fidelity with int8 attention cores.
    """

    name: str
    function: Callable[..., list[dict]]
    defaults: Mapping[str, Any]
    source: str = ""
    data: str = "text"
    classifier_teacher: bool = False
    fake_quant: bool = False
    int8_fidelity: bool = False


#: The recipe ``inhibitron distill`` runs without ``--recipe``, and the demo's (measured: docs/distillation.md).
DEFAULT_RECIPE = "layerwise_full"

#: name -> Recipe, in registration order (the paper's). Add with :func:`register`.
REGISTRY: dict[str, Recipe] = {}


def register(name: str, *, defaults: Mapping[str, Any], source: str = "", data: str = "text",
             classifier_teacher: bool = False, fake_quant: bool = False, int8_fidelity: bool = False):
    """Decorator: register the decorated function as recipe ``name`` (see :class:`Recipe`).

    Raises
    ------
    ValueError
        ``name`` is taken or not an identifier-like string, ``data`` is not one
        of :data:`DATA_KINDS`, or ``defaults`` names a field DistillConfig lacks.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"recipe name must be an identifier, not {name!r}")
    if name in REGISTRY:
        raise ValueError(f"recipe {name!r} is already registered")
    if data not in DATA_KINDS:
        raise ValueError(f"data must be one of {DATA_KINDS}, not {data!r}")
    unknown = sorted(set(defaults) - {f.name for f in fields(DistillConfig)})
    if unknown:
        raise ValueError(f"defaults of recipe {name!r} name unknown DistillConfig fields {unknown}")

    def decorate(function: Callable[..., list[dict]]) -> Callable[..., list[dict]]:
        REGISTRY[name] = Recipe(name, function, MappingProxyType(dict(defaults)), source, data,
                                classifier_teacher, fake_quant, int8_fidelity)
        return function

    return decorate


def recipe_names() -> tuple[str, ...]:
    """The registered recipe names, in registration order."""
    return tuple(REGISTRY)


def get_recipe(name: str) -> Recipe:
    """The registered recipe ``name``; ValueError naming the choices if there is none."""
    if name not in REGISTRY:
        raise ValueError(f"recipe must be one of {recipe_names()}, not {name!r}")
    return REGISTRY[name]


def default_config(recipe: str, **overrides: Any) -> DistillConfig:
    """The paper's configuration of ``recipe``, with ``overrides`` applied.

    Raises
    ------
    ValueError
        Unknown recipe, unknown field or an invalid value.
    """
    defaults = get_recipe(recipe).defaults
    known = {f.name for f in fields(DistillConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown DistillConfig fields {unknown}")
    values = {**defaults, **overrides, "recipe": recipe}
    return DistillConfig(**values)


def __getattr__(name: str):
    # Read-only views kept for older callers: RECIPES (names), PAPER_DEFAULTS (name -> defaults).
    if name == "RECIPES":
        return recipe_names()
    if name == "PAPER_DEFAULTS":
        return {r.name: dict(r.defaults) for r in REGISTRY.values()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _expect(config: DistillConfig, recipe: str) -> None:
    if not isinstance(config, DistillConfig):
        raise TypeError(f"config must be a DistillConfig, not {type(config).__name__}")
    if config.recipe != recipe:
        raise ValueError(f"config is for recipe {config.recipe!r}; use default_config({recipe!r})")


# ---------------------------------------------------------------------------
# The recipes
# ---------------------------------------------------------------------------


@register(
    "layerwise", source="Exp. 1a", data="text", int8_fidelity=True,
    # KD_weight_init/weights_init.ipynb: EPOCHS=2 per layer, BATCH_SIZE=8,
    # gradient_accumulation_steps=4, LEARNING_RATE=5e-4, cosine, warmup_ratio=0.05, seed 42.
    # Ours, each measured on its own (docs/distillation.md): student in eval mode, gamma/delta grid.
    defaults={"epochs": 2.0, "batch_size": 8, "grad_accum": 4, "lr": 5e-4, "weight_decay": 0.0,
              "warmup_ratio": 0.05, "schedule": "cosine", "student_dropout": False, "fit_scalars": True},
)
def distill_layerwise(teacher, student, data, config: DistillConfig, out_dir, *,
                      tokenizer=None, env=None, resume=False, stop_after_steps=None, progress=True,
                      run_info=None) -> list[dict]:
    """Experiment 1a: layer-wise distillation of the attention contexts, bottom-up.

    For each layer ``i`` (``config.layers``, default all) in turn, only the
    layer's Q/K/V projections and its inhibitor's gamma/eta/delta train, on
    the MSE (over valid tokens) between the teacher's and the student's
    attention context of layer ``i`` (the self-attention output before the
    output projection). The layer sees the *student's* own hidden state (its
    lower layers already distilled and frozen; the thesis code) or, with
    ``config.layer_input="teacher"``, the teacher's. After its epochs the
    layer is frozen. Forward passes stop at layer ``i``.

    Parameters
    ----------
    teacher : BertModel / DistilBertModel (frozen, eval)
    student : its inhibitor twin (:func:`~inhibitron.model.surgery.to_inhibitor`)
    data : TokenDataset of unlabelled text (:func:`~inhibitron.model.data.text_dataset`)
    config : DistillConfig with ``recipe="layerwise"``
    out_dir : path-like; see :func:`~inhibitron.model.training.train`.
    tokenizer : saved next to the final student when given.

    Returns
    -------
    list of dict: the metric history (see :func:`~inhibitron.model.training.train`).
    """
    from .training import prepare_models, run_phases

    _expect(config, "layerwise")
    env = prepare_models(teacher, student, env)
    phases = _layer_phases(teacher, student, config)
    return run_phases(student, phases, data, config, out_dir, env=env, tokenizer=tokenizer, resume=resume,
                      stop_after_steps=stop_after_steps, progress=progress, run_info=run_info)


def _layer_phases(teacher, student, config: DistillConfig) -> list:
    """The phases of layer-wise distillation: one per layer of ``config.layers`` (default all)."""
    from .losses import chain_setups, fit_eta, fit_scalars, layer_trainable_names, layerwise_loss
    from .surgery import attention_modules
    from .training import Phase

    n_layers = len(attention_modules(student))
    if len(attention_modules(teacher)) != n_layers:
        raise ValueError(
            f"layer-wise distillation needs as many teacher layers as student layers "
            f"({len(attention_modules(teacher))} vs {n_layers})"
        )
    layers = config.layers if config.layers is not None else tuple(range(n_layers))
    if layers[-1] >= n_layers:
        raise ValueError(f"config.layers names layer {layers[-1]}; the model has {n_layers} (0..{n_layers - 1})")
    return [Phase(f"layer {i}", i, layer_trainable_names(student, i),
                  layerwise_loss(teacher, student, i, config.layer_input),
                  chain_setups(fit_scalars(teacher, student, i, config.layer_input) if config.fit_scalars else None,
                               fit_eta(teacher, student, i, config.layer_input) if config.fit_eta else None))
            for i in layers]


@register(
    "full", source="Exp. 1b", data="text", int8_fidelity=True,
    # KD_weight_init/iDistilbert_weights_init.ipynb: EPOCHS=3, BATCH_SIZE=8,
    # gradient_accumulation_steps=32, LEARNING_RATE=3e-4, cosine, warmup_ratio=0.05, seed 42.
    # Ours: student in eval mode, as the teacher.
    defaults={"epochs": 3.0, "batch_size": 8, "grad_accum": 32, "lr": 3e-4, "weight_decay": 0.0,
              "warmup_ratio": 0.05, "schedule": "cosine", "student_dropout": False},
)
def distill_full(teacher, student, data, config: DistillConfig, out_dir, *,
                 tokenizer=None, env=None, resume=False, stop_after_steps=None, progress=True,
                 run_info=None) -> list[dict]:
    """Experiment 1b: every student parameter trains on the sum over layers of the
    hidden-state MSE (valid tokens) against the teacher. Arguments as :func:`distill_layerwise`."""
    from .losses import full_loss
    from .training import Phase, prepare_models, run_phases

    _expect(config, "full")
    env = prepare_models(teacher, student, env)
    names = [n for n, _ in student.named_parameters()]
    phases = [Phase("full", None, names, full_loss(teacher, student, config.alpha_cos, config.alpha_sim))]
    return run_phases(student, phases, data, config, out_dir, env=env, tokenizer=tokenizer, resume=resume,
                      stop_after_steps=stop_after_steps, progress=progress, run_info=run_info)


@register(
    "layerwise_full", source="Exp. 1a then 1b", data="text", int8_fidelity=True,
    # Ours, a step budget measured on 2 CPU cores (docs/distillation.md): 10 layer-wise steps
    # per layer (after the per-head grid), then a long full phase of 12 epochs, at most 3000
    # steps, at the paper's lr 3e-4; batches of 8 sentences (at most 64 tokens), no
    # accumulation. The full steps are what buy quality (150 -> 600 -> 1200 window steps:
    # cosine 0.904 -> 0.931 -> 0.941); sentences instead of 64-token windows, the unit the
    # model embeds, gave +0.008 cosine and +0.014 Spearman at 1200 steps, at 0.8x the cost of
    # a step. The paper's 2 + 3 epochs at 8 x 4, 128 tokens cost more and reached 0.919. The
    # full phase adds the pooled-embedding cosine term (alpha_cos 1; +0.03 cosine, +0.08 Spearman).
    defaults={"epochs": 2.0, "max_steps": 10, "batch_size": 8, "grad_accum": 1, "max_length": 64,
              "text_unit": "sentence", "lr": 5e-4, "weight_decay": 0.0, "warmup_ratio": 0.05,
              "schedule": "cosine", "student_dropout": False, "fit_scalars": True,
              "full_epochs": 12.0, "full_max_steps": 3000, "full_lr": 3e-4, "alpha_cos": 1.0},
)
def distill_layerwise_full(teacher, student, data, config: DistillConfig, out_dir, *,
                           tokenizer=None, env=None, resume=False, stop_after_steps=None, progress=True,
                           run_info=None) -> list[dict]:
    """Layer-wise distillation (Exp. 1a, every phase as :func:`distill_layerwise`), then a
    ``full`` phase (Exp. 1b: every parameter, sum of hidden-state MSEs) in the same run.

    Layer-wise fits each attention context but leaves the rest of each layer
    (output projection, feed-forward, LayerNorms) as the teacher had it; the
    full phase adapts them to the inhibitor. The full phase runs
    ``config.full_epochs`` epochs (capped at ``config.full_max_steps``) at peak
    learning rate ``config.full_lr``, with the batch, accumulation and schedule
    shape of the layer phases. Arguments as :func:`distill_layerwise`.
    """
    from dataclasses import replace

    from .losses import full_loss
    from .schedule import phase_steps
    from .training import Phase, prepare_models, run_phases

    _expect(config, "layerwise_full")
    env = prepare_models(teacher, student, env)
    _, full_steps = phase_steps(replace(config, epochs=config.full_epochs, max_steps=config.full_max_steps),
                                len(data))
    names = [n for n, _ in student.named_parameters()]
    phases = [*_layer_phases(teacher, student, config),
              Phase("full", None, names, full_loss(teacher, student, config.alpha_cos, config.alpha_sim),
                    steps=full_steps,
                    lr=config.full_lr)]
    return run_phases(student, phases, data, config, out_dir, env=env, tokenizer=tokenizer, resume=resume,
                      stop_after_steps=stop_after_steps, progress=progress, run_info=run_info)


@register(
    "task", source="Exp. 2", data="labelled", classifier_teacher=True,
    # KD_task_specific/inhibit_bert/KD_iDistilbert_QNLI.ipynb (and QQP): temperature 4,
    # alpha_ce 0.5 / alpha_cos 0.5, EPOCHS=5, BATCH_SIZE=8, LEARNING_RATE=2e-5, linear, no warm-up.
    defaults={"epochs": 5.0, "batch_size": 8, "grad_accum": 1, "lr": 2e-5, "weight_decay": 0.0,
              "warmup_ratio": 0.0, "schedule": "linear", "temperature": 4.0, "alpha_kd": 0.5,
              "alpha_hidden": 0.5},
)
def distill_task(teacher, student, data, config: DistillConfig, out_dir, *,
                 tokenizer=None, env=None, resume=False, stop_after_steps=None, progress=True,
                 run_info=None) -> list[dict]:
    """Experiment 2: task-specific distillation from a fine-tuned classifier.

    Loss = ``alpha_kd * T^2 * KL(softmax(t/T) || softmax(s/T))`` (per sequence)
    ``+ alpha_hidden * mean over student layers of the hidden-state MSE``
    (student layer ``i`` matched to teacher layer ``round((i+1) L_t / L_s)``).
    ``teacher`` and ``student`` are ``*ForSequenceClassification`` models
    (:func:`~inhibitron.model.classifier.load_classifier`,
    :func:`~inhibitron.model.classifier.classifier_student`); ``data`` a labelled
    :class:`~inhibitron.model.data.TokenDataset` (labels unused by the loss).
    """
    from .losses import task_loss
    from .training import Phase, prepare_models, run_phases

    _expect(config, "task")
    env = prepare_models(teacher, student, env)
    if getattr(teacher, "num_labels", None) != getattr(student, "num_labels", None):
        raise ValueError(f"teacher has {getattr(teacher, 'num_labels', None)} labels, "
                         f"student {getattr(student, 'num_labels', None)}")
    if config.alpha_hidden > 0:
        th, sh = teacher.config.hidden_size if hasattr(teacher.config, "hidden_size") else teacher.config.dim, \
            student.config.hidden_size if hasattr(student.config, "hidden_size") else student.config.dim
        if th != sh:
            raise ValueError(f"hidden-state MSE needs equal hidden sizes (teacher {th}, student {sh}); "
                             "set alpha_hidden=0")
    names = [n for n, _ in student.named_parameters()]
    phases = [Phase("task", None, names, task_loss(teacher, student, config))]
    return run_phases(student, phases, data, config, out_dir, env=env, tokenizer=tokenizer, resume=resume,
                      stop_after_steps=stop_after_steps, progress=progress, run_info=run_info)


@register(
    "finetune", source="Table 6", data="labelled",
    # KD_task_specific/inhibit_bert/FT_iDistilbert_GLUE.ipynb: EPOCHS=4, BATCH_SIZE=8,
    # LEARNING_RATE=2e-5, cosine, weight_decay=0.01, no warm-up.
    defaults={"epochs": 4.0, "batch_size": 8, "grad_accum": 1, "lr": 2e-5, "weight_decay": 0.01,
              "warmup_ratio": 0.0, "schedule": "cosine"},
)
def finetune(student, data, config: DistillConfig, out_dir, *, teacher=None, tokenizer=None, env=None,
             resume=False, stop_after_steps=None, progress=True, run_info=None) -> list[dict]:
    """Table 6: fine-tune a ``*ForSequenceClassification`` student on labelled data
    (cross-entropy; MSE when it has one output, a regression task). ``teacher`` must be
    None (it is accepted so that every recipe takes the same keywords)."""
    from .losses import supervised_loss
    from .training import Phase, prepare_models, run_phases

    _expect(config, "finetune")
    if teacher is not None:
        raise ValueError("fine-tuning learns from the labels and takes no teacher")
    if data.labels is None:
        raise ValueError("fine-tuning needs labelled data (GLUE .tsv or an IMDb folder)")
    env = prepare_models(None, student, env)
    names = [n for n, _ in student.named_parameters()]
    phases = [Phase("finetune", None, names, supervised_loss(student))]
    return run_phases(student, phases, data, config, out_dir, env=env, tokenizer=tokenizer, resume=resume,
                      stop_after_steps=stop_after_steps, progress=progress, run_info=run_info)


@register(
    "qat", data="either", fake_quant=True,
    # Not in the paper, whose only quantization was post-training dynamic int8:
    # the fine-tuning settings with one epoch and a 5% warm-up for the fake-quant start.
    defaults={"epochs": 1.0, "batch_size": 8, "grad_accum": 1, "lr": 2e-5, "weight_decay": 0.01,
              "warmup_ratio": 0.05, "schedule": "cosine"},
)
def finetune_qat(student, data, config: DistillConfig, out_dir, *, fake_quant,
                 teacher=None, tokenizer=None, env=None, resume=False, stop_after_steps=None,
                 progress=True, run_info=None) -> list[dict]:
    """Quantization-aware fine-tuning with a fake-quantized inhibitor attention.

    ``fake_quant(student) -> student`` swaps the student's attention cores for
    their fake-quantized versions (straight-through estimator); it comes from
    ``inhibitron.quant.qat`` (the model package does not import quant: the
    CLI passes it). The student then trains: on the labels when ``teacher``
    is None (``data`` must be labelled), else on the hidden-state MSE
    against the float ``teacher`` (task-agnostic QAT on text). The final
    student is saved as its config and raw state dict (fake-quant modules included).
    """
    from .losses import full_loss, supervised_loss
    from .training import Phase, prepare_models, run_phases

    _expect(config, "qat")
    if not callable(fake_quant):
        raise TypeError("fake_quant must be a callable that swaps in the fake-quantized attention")
    env = prepare_models(teacher, student, env)
    student = fake_quant(student) or student
    student.to(env.device)
    names = [n for n, _ in student.named_parameters()]
    if teacher is None:
        if data.labels is None:
            raise ValueError("QAT needs labelled data or a teacher to distil from")
        loss = supervised_loss(student)
    else:
        loss = full_loss(teacher, student)
    phases = [Phase("qat", None, names, loss)]
    return run_phases(student, phases, data, config, out_dir, env=env, tokenizer=tokenizer, resume=resume,
                      stop_after_steps=stop_after_steps, progress=progress, run_info=run_info,
                      save=_save_state_dict)


def _save_state_dict(student, out_dir: Path, tokenizer, env) -> None:
    """Save ``student`` as ``config.json`` + ``model.safetensors`` of its raw state dict."""
    if not env.is_main:
        return
    from safetensors.torch import save_file

    folder = out_dir / "student"
    folder.mkdir(parents=True, exist_ok=True)
    student.config.save_pretrained(folder)
    save_file({k: v.detach().contiguous().cpu() for k, v in student.state_dict().items()},
              str(folder / "model.safetensors"))
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
