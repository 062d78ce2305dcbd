"""Both cores on random small configurations, cosimulated bit-exact (slow: ``make test-all``).

The CI configurations are chosen by hand; these are drawn (seeded, so a failure
reproduces): array shapes up to 3x3, n and d up to 9, input formats of 2-16
bits, outputs of 2-32 bits, the inhibitor's shifts, the baseline's fabric
multipliers, register slices. Each runs
at full rate and with idle inputs and backpressure, every output code compared,
and its steady state against the cycle formula (the inhibitor's exact with two
or more row blocks per head; a lower bound with one, and for the baseline's
short heads). Drawn this way, the check found two
bugs the hand-picked shapes had missed: an output wider than the accumulator
came out with the wrong sign for negative values, and with one or two row
blocks per head the baseline's score stage could start head ``h + 2`` on head
``h``'s descriptor.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from inhibitron.hw.baseline_config import BaselineConfig
from inhibitron.hw.core import CoreConfig
from test_baseline_cosim import baseline_cosim
from test_cosim import cosim

pytestmark = [pytest.mark.slow, pytest.mark.cosim]

DRAWS = 8


def _draw(kind: str, index: int):
    """The ``index``-th valid random configuration of ``kind`` (rejecting invalid draws)."""
    rng = np.random.default_rng(zlib.crc32(f"{kind}-{index}".encode()))
    config = CoreConfig if kind == "inhibitor" else BaselineConfig
    while True:
        n, d = int(rng.integers(1, 10)), int(rng.integers(1, 10))
        kw = dict(rows=int(rng.integers(1, min(n, 3) + 1)), cols=int(rng.integers(1, min(n, d, 3) + 1)),
                  seq_len=n, head_dim=d, qk_bits=int(rng.choice([2, 3, 5, 8, 12, 16])),
                  v_bits=int(rng.choice([2, 3, 4, 6, 8, 11, 16])),
                  out_bits=int(rng.choice([2, 3, 5, 8, 13, 16, 24, 32])),
                  stream_slices=bool(rng.random() < 0.3))
        if kind == "inhibitor" and rng.random() < 0.5:
            kw["v_shift" if rng.random() < 0.5 else "z_shift"] = int(rng.integers(1, 4))
        if kind == "baseline" and rng.random() < 0.3:
            kw["multipliers"] = "fabric"
        try:
            return config.from_dict(dict(kw, name=f"{kind}_random{index}"))
        except ValueError:
            continue            # e.g. the baseline needs n and d to be multiples of the array


@pytest.mark.parametrize("index", range(DRAWS))
def test_inhibitor_random_configuration(index, tmp_path_factory):
    cosim(f"random{index}", _draw("inhibitor", index).to_dict(), tmp_path_factory, random_count=4)


@pytest.mark.parametrize("index", range(DRAWS))
def test_baseline_random_configuration(index, tmp_path):
    # the cycle formula as a lower bound: with few row blocks per head a head's descriptor
    # slot, held from its first score job to its last mixing job, can bind
    # (docs/baseline.md, Cycles)
    baseline_cosim(_draw("baseline", index), tmp_path, seed=index, exact=False)
