"""The FPGA device registry: every supported part and what the flow needs to know about its family.

A :class:`Device` is one part + package + speed grade with its capacities; a
:class:`Family` holds what all parts of an architecture share: the Yosys
synthesis command, the nextpnr binary, which Yosys cell types count as LUT,
carry, flip-flop, DSP and block RAM, and nextpnr's names for placed logic and
DSP cells. :data:`DEVICES` and :data:`FAMILIES` are the only tables of them:
the synthesis flow (:mod:`inhibitron.hw.synth`), the report parsers
(:mod:`inhibitron.hw.synth_reports`) and the command line read everything
from here, so a new part of a known family is one line of :data:`DEVICES`.

This module imports nothing heavy (the CLI reads it to list ``--device`` choices).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Family", "FAMILIES", "Device", "DEVICES", "DEFAULT_DEVICE", "get_device",
           "get_family", "device_names", "RESOURCE_CLASSES", "NEXTPNR_ROUTERS", "NEXTPNR_PLACERS"]

#: Resource classes every :attr:`Family.cells` table defines.
RESOURCE_CLASSES = ("lut4", "carry", "ff", "dsp", "bram", "lutram", "mux")

#: nextpnr routers (``--router``) and placers (``--placer``) of both families' nextpnr
#: (``nextpnr-ecp5 --help``, ``nextpnr-ice40 --help``); nextpnr's defaults are ``router1``
#: and ``heap``.
NEXTPNR_ROUTERS = ("router1", "router2")
NEXTPNR_PLACERS = ("heap", "sa", "static")


@dataclass(frozen=True)
class Family:
    """What the flow needs to know about one FPGA architecture.

    Parameters
    ----------
    name : str
        ``"ecp5"``, ``"ice40"``.
    synth_command : str
        Yosys synthesis command; ``{top}`` is replaced by the top module.
    nextpnr : str
        nextpnr tool name, a key of :data:`inhibitron.hw.toolchain.YOWASP`.
    cells : dict of str to tuple of str
        Yosys cell types per resource class (every one of :data:`RESOURCE_CLASSES`).
    carry_sites : int
        LUT4 sites one carry cell occupies beyond the LUT4 cells
        (``lut4_equiv = lut4 + carry_sites * carry``): 2 for ECP5's ``CCU2C``,
        0 for iCE40's ``SB_CARRY`` (it sits beside the LUT of its logic cell).
    placed_comb, placed_dsp : str
        nextpnr utilisation keys of placed logic cells and hard multipliers.
    bram_outreg : bool
        The block-RAM output-register retiming of :mod:`inhibitron.hw.ecp5_outreg` applies.
    """

    name: str
    synth_command: str
    nextpnr: str
    cells: dict[str, tuple[str, ...]] = field(hash=False)
    carry_sites: int
    placed_comb: str
    placed_dsp: str
    bram_outreg: bool = False

    def synth_script(self, top: str) -> str:
        """The Yosys synthesis command for *top*."""
        return self.synth_command.format(top=top)


_ICE40_FF = ("SB_DFF", "SB_DFFE", "SB_DFFSR", "SB_DFFR", "SB_DFFS", "SB_DFFESR",
             "SB_DFFER", "SB_DFFES", "SB_DFFSS", "SB_DFFESS", "SB_DFFN", "SB_DFFNE",
             "SB_DFFNSR", "SB_DFFNR", "SB_DFFNS", "SB_DFFNESR", "SB_DFFNER",
             "SB_DFFNES", "SB_DFFNSS", "SB_DFFNESS")

#: Supported FPGA families.
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "ecp5", "synth_ecp5 -top {top}", "nextpnr-ecp5",
            cells={
                "lut4": ("LUT4",),
                "carry": ("CCU2C",),
                "ff": ("TRELLIS_FF",),
                "dsp": ("MULT18X18D", "ALU54B"),
                "bram": ("DP16KD",),
                "lutram": ("TRELLIS_DPR16X4",),
                "mux": ("PFUMX", "L6MUX21"),
            },
            carry_sites=2, placed_comb="TRELLIS_COMB", placed_dsp="MULT18X18D",
            bram_outreg=True,
        ),
        Family(
            "ice40", "synth_ice40 -dsp -top {top}", "nextpnr-ice40",
            cells={
                "lut4": ("SB_LUT4",),
                "carry": ("SB_CARRY",),
                "ff": _ICE40_FF,
                "dsp": ("SB_MAC16",),
                "bram": ("SB_RAM40_4K",),
                "lutram": (),
                "mux": (),
            },
            carry_sites=0, placed_comb="ICESTORM_LC", placed_dsp="ICESTORM_DSP",
        ),
    )
}


@dataclass(frozen=True)
class Device:
    """One FPGA part + package + speed grade, and its capacities.

    Parameters
    ----------
    name : str
        Short name used on the command line (``"ecp5-85f"``).
    family : str
        A key of :data:`FAMILIES` (``"ecp5"`` or ``"ice40"``).
    part, package : str
        Vendor part number and package, as in the data sheet.
    speed : int or None
        Speed grade (None where the family has one only).
    pnr_args : tuple of str
        Device/package/speed arguments of nextpnr.
    user_io : int
        User I/O pins of the package (datasheet). Designs with more port bits
        are wrapped.
    lut4 : int
        LUT4 sites (ECP5 ``TRELLIS_COMB``; iCE40 logic cells).
    dsp : int
        Hard multipliers (``MULT18X18D`` / ``SB_MAC16``).
    bram : int
        Block RAMs (``DP16KD`` / ``SB_RAM40_4K``).
    """

    name: str
    family: str
    part: str
    package: str
    speed: int | None
    pnr_args: tuple[str, ...]
    user_io: int
    lut4: int
    dsp: int
    bram: int

    @property
    def arch(self) -> Family:
        """The :class:`Family` of this device."""
        return get_family(self.family)


#: Supported devices. Capacities from the Lattice data sheets (ECP5: FPGA-DS-02012;
#: iCE40 UltraPlus: FPGA-DS-02008) and nextpnr's utilisation report.
DEVICES: dict[str, Device] = {
    d.name: d
    for d in (
        Device("ecp5-25f", "ecp5", "LFE5U-25F", "CABGA256", 6,
               ("--25k", "--package", "CABGA256", "--speed", "6"), 197, 24288, 28, 56),
        Device("ecp5-45f", "ecp5", "LFE5U-45F", "CABGA381", 6,
               ("--45k", "--package", "CABGA381", "--speed", "6"), 203, 43848, 72, 108),
        Device("ecp5-85f", "ecp5", "LFE5U-85F", "CABGA381", 6,
               ("--85k", "--package", "CABGA381", "--speed", "6"), 205, 83640, 156, 208),
        Device("ice40-up5k", "ice40", "iCE40UP5K", "SG48", None,
               ("--up5k", "--package", "sg48"), 39, 5280, 8, 30),
    )
}

#: Device of ``inhibitron synth`` and ``inhibitron compare`` when none is named.
DEFAULT_DEVICE = "ecp5-85f"


def device_names() -> tuple[str, ...]:
    """Names of :data:`DEVICES`, in table order (the CLI's ``--device`` choices)."""
    return tuple(DEVICES)


def get_device(name: str) -> Device:
    """Return the :class:`Device` called *name*.

    Raises
    ------
    ValueError
        If *name* is not one of :data:`DEVICES`.
    """
    try:
        return DEVICES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"device must be one of {', '.join(DEVICES)}, not {name!r}"
        ) from None


def get_family(name: str) -> Family:
    """Return the :class:`Family` called *name*.

    Raises
    ------
    ValueError
        If *name* is not one of :data:`FAMILIES`.
    """
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"family must be one of {', '.join(FAMILIES)}, not {name!r}"
        ) from None
