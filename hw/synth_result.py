"""The record of one synthesis run (:class:`SynthResult`) and the flow's errors.

:class:`SynthResult` is what :func:`inhibitron.hw.synth.synthesize` returns
and saves as ``<out>/<top>.synth.json``; its fields are described in
``docs/fpga.md`` (section "What is measured").

Resource figures (all counts of *cells*):

``lut4``
    Yosys ``LUT4`` (ECP5) / ``SB_LUT4`` (iCE40) cells of the core.
``carry``
    ``CCU2C`` (ECP5, two LUT4 sites each) / ``SB_CARRY`` (iCE40) cells of the core.
``lut4_equiv``
    LUT4 sites of the core: ``lut4 + 2 * carry`` on ECP5 (a CCU2C occupies two
    LUT4 sites), ``lut4`` on iCE40 (SB_CARRY sits beside the LUT of its logic
    cell). This is the figure compared across designs.
``ff``, ``dsp``, ``bram``
    Flip-flops, ``MULT18X18D`` + ``ALU54B`` / ``SB_MAC16``, ``DP16KD`` / ``SB_RAM40_4K``.
``placed_comb``
    ``TRELLIS_COMB`` / ``ICESTORM_LC`` used after packing, from nextpnr, for
    the whole placed design (wrapper included).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

__all__ = ["SynthResult", "DesignDoesNotFit", "ToolError", "NotCached"]


class ToolError(RuntimeError):
    """Yosys or nextpnr failed for a reason other than the design not fitting."""


class NotCached(LookupError):
    """``synthesize(..., cache_only=True)`` found no saved result for these inputs."""


class DesignDoesNotFit(ValueError):
    """The design needs more of a resource than the device has.

    Attributes
    ----------
    device : str
    resource : str
        Cell type as nextpnr names it (``"MULT18X18D"``, ``"TRELLIS_COMB"``, ...).
    needed, available : int
    """

    def __init__(self, *, design: str, device: str, resource: str, needed: int,
                 available: int, detail: str = ""):
        self.design = design
        self.device = device
        self.resource = resource
        self.needed = needed
        self.available = available
        msg = (f"design {design!r} does not fit {device}: it needs {needed} {resource}, "
               f"the device has {available}")
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


@dataclass(frozen=True)
class SynthResult:
    """Parsed outcome of one synthesis + place-and-route run.

    All resource figures count the *core* (the user's top module), not the I/O
    wrapper, except ``placed_*`` and ``utilization`` which describe the whole
    placed design. ``fmax_mhz`` is the achieved Fmax of the slowest clock (MHz).
    """

    design: str
    top: str
    device: str
    family: str
    freq_target_mhz: float
    seed: int
    design_hash: str
    lut4: int
    carry: int
    lut4_equiv: int
    ff: int
    dsp: int
    bram: int
    premap_mul: int
    cells: dict[str, int]
    io_bits: int
    wrapped: bool
    fmax_mhz: float | None = None
    fmax_by_clock: dict[str, float] = field(default_factory=dict)
    placed_comb: int | None = None
    placed_dsp: int | None = None
    utilization: dict[str, list[int]] = field(default_factory=dict)
    critical_path: dict | None = None
    pnr_run: bool = True
    bram_outreg_ports: int = 0
    #: ECP5 multiplier register sides enabled by :mod:`inhibitron.hw.ecp5_dspreg` (operand
    #: pair or product, counted per multiplier); their fabric flip-flops are not in ``ff``.
    dsp_registers_absorbed: int = 0
    #: ABC (inside Yosys) crashed on the first try and the run was repeated after
    #: ``opt_clean -purge`` (see :func:`inhibitron.hw.synth.synthesize`).
    abc_crash_retry: bool = False
    runtime_s: float = 0.0
    tool_versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SynthResult:
        data = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def summary(self) -> str:
        """One human-readable line per figure."""
        lines = [
            f"design {self.design} (top {self.top}) on {self.device}"
            + (" [I/O wrapped]" if self.wrapped else ""),
            f"  LUT4 {self.lut4}  carry {self.carry}  (LUT4 sites {self.lut4_equiv})"
            f"  FF {self.ff}  DSP {self.dsp}  BRAM {self.bram}"
            + (f" ({self.bram_outreg_ports} ports output-registered)" if self.bram_outreg_ports else "")
            + (f"  DSP register sides absorbed {self.dsp_registers_absorbed}"
               if self.dsp_registers_absorbed else "")
            + f"  $mul before mapping {self.premap_mul}",
        ]
        if self.pnr_run:
            fmax = "n/a" if self.fmax_mhz is None else f"{self.fmax_mhz:.1f} MHz"
            lines.append(f"  Fmax {fmax} (target {self.freq_target_mhz:g} MHz, seed {self.seed})"
                         f"  placed logic cells {self.placed_comb}")
            if self.critical_path:
                cp = self.critical_path
                lines.append(f"  critical path {cp['delay_ns']:.2f} ns "
                             f"({cp['logic_ns']:.2f} logic, {cp['routing_ns']:.2f} routing): "
                             f"{cp['from_cell']} -> {cp['to_cell']}")
        return "\n".join(lines)
