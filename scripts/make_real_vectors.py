"""Write sim/data/minilm_qkv_codes.npz: real quantized Q/K/V codes from the MiniLM teacher.

Reproducible (fixed sentences from the embedded corpus, seed 0, CPU float32):
runs the embedded all-MiniLM-L6-v2 teacher on a small batch of real English
sentences, captures Q/K/V of every layer (``inhibitron.model.capture``),
calibrates each layer per head (min/max observers,
``inhibitron.quant.calibrate.fold_layer`` with the paper's initial
gamma = 1, eta = 1, delta = -alpha = -0.5) and quantizes with
``inhibitron.quant.golden.quantize_inputs`` to 8-bit codes. The cosimulation
reads the ``.npz`` and needs no torch.

Stored arrays (``H`` heads picked across layers and sentences)::

    q, k, v   (H, n, d) int8     codes (qk_bits = v_bits = 8)
    length    (H,)      int64    valid length L of the sentence (key padding)
    theta     (H,)      int64    folded threshold of the head
    layer, head, sentence (H,)   provenance
    qk_bits, v_bits              8, 8

Usage: ``python scripts/make_real_vectors.py [--out sim/data/minilm_qkv_codes.npz]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

N_TOKENS = 16        # padded sequence length stored (the core crops or tiles)
SENTENCES = 4
HEADS_PER_LAYER = 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent
                                             / "sim" / "data" / "minilm_qkv_codes.npz"))
    args = parser.parse_args(argv)

    import torch

    from inhibitron.model.capture import capture_qkv, tokenize
    from inhibitron.model.corpus import embedded_sentences
    from inhibitron.model.surgery import load_teacher
    from inhibitron.quant.calibrate import fold_layer, observe_layer
    from inhibitron.quant.formats import AttentionFormats
    from inhibitron.quant.golden import quantize_inputs, valid_len_from_mask

    torch.manual_seed(0)
    model, tok = load_teacher()
    sentences = embedded_sentences(SENTENCES, seed=0, max_words=12)
    ids, mask = tokenize(tok, sentences, max_length=N_TOKENS)
    if ids.shape[1] < N_TOKENS:   # pad to N_TOKENS so every head has the same n
        pad = N_TOKENS - ids.shape[1]
        ids = torch.nn.functional.pad(ids, (0, pad), value=tok.pad_token_id or 0)
        mask = torch.nn.functional.pad(mask, (0, pad), value=0)
    with torch.no_grad():
        layers = capture_qkv(model, ids, mask)
    formats = AttentionFormats(qk_bits=8, v_bits=8, out_bits=8)
    lengths = valid_len_from_mask(mask.numpy().astype(bool))          # (B,)
    out = {k: [] for k in ("q", "k", "v", "length", "theta", "layer", "head", "sentence")}
    for li, layer in enumerate(layers):
        q_obs, k_obs, v_obs = observe_layer(layer, bits=formats, name=f"layer{li}")
        num_heads = layer["q"].shape[1]
        lq = fold_layer(np.ones(num_heads), np.ones(num_heads), np.full(num_heads, -0.5),
                        q_obs, k_obs, v_obs, formats=formats, seq_len=N_TOKENS,
                        name=f"layer{li}")
        qc, kc, vc = quantize_inputs(layer["q"], layer["k"], layer["v"], lq)   # (B, H, n, d)
        for h in range(HEADS_PER_LAYER):
            head = (li * 5 + h * 7) % num_heads
            b = (li + h) % SENTENCES
            row = {"q": qc[b, head], "k": kc[b, head], "v": vc[b, head],
                   "length": int(lengths[b]), "theta": int(lq.theta[head]),
                   "layer": li, "head": head, "sentence": b}
            for key, value in row.items():
                out[key].append(value)
    arrays = {k: np.asarray(v, dtype=np.int8 if k in "qkv" else np.int64) for k, v in out.items()}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, qk_bits=np.int64(8), v_bits=np.int64(8), **arrays)
    print(f"wrote {path} ({path.stat().st_size} bytes): {len(arrays['q'])} heads of "
          f"{arrays['q'].shape[1:]} codes, lengths {sorted(set(arrays['length'].tolist()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
