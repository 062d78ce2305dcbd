"""The report's computations: saturation counts are those of the quantizer (quant.rounding), the sweep."""

import numpy as np
import pytest

from inhibitron.quant.formats import IntFormat
from inhibitron.quant.report_tables import _count_clipped, bit_width_sweep


# (values, scale, bits, clipped): rint half to even decides at the boundary.
CLIP_TABLE = [
    ([126.5, 127.4, -128.4], 1.0, 8, 0),      # 126.5 -> 126, 127.4 -> 127, -128.4 -> -128
    ([127.5, -128.5, -128.6], 1.0, 8, 2),     # 127.5 -> 128 (ties to even), -128.5 -> -128, -128.6 -> -129
    # s2 is [-2, 1]: 1.5 -> 2 (out), -2 (in), 1 (in), -2.5 -> -2 (in), -2.6 -> -3 (out)
    ([0.75, -1.0, 0.5, -1.25, -1.3], 0.5, 2, 2),
    ([1e300, -1e300, 0.0], 1.0, 16, 2),
    ([], 1.0, 8, 0),
]


@pytest.mark.parametrize("values, scale, bits, clipped", CLIP_TABLE)
def test_count_clipped_is_what_the_quantizer_saturates(values, scale, bits, clipped):
    x = np.asarray(values, dtype=np.float64)
    assert _count_clipped(x, scale, IntFormat(bits)) == clipped


def test_count_clipped_matches_intformat_quantize_on_random_values():
    rng = np.random.default_rng(0)
    x = rng.normal(scale=40.0, size=20000)
    fmt = IntFormat(6)
    codes = fmt.quantize(x, 1.5)
    unclipped = np.rint(x / 1.5)
    assert _count_clipped(x, 1.5, fmt) == int((codes != unclipped).sum()) > 0


def test_empty_sweep():
    assert bit_width_sweep([], []) == {"bits": [], "sqnr_db": {}}
