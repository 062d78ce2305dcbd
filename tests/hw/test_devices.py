"""The device registry: every device and family complete, the CLI offers exactly the registry."""

from __future__ import annotations

import argparse

import pytest

from inhibitron.hw import devices, toolchain
from inhibitron.hw.devices import DEVICES, FAMILIES, RESOURCE_CLASSES


@pytest.mark.parametrize("name", sorted(DEVICES))
def test_every_device_is_complete(name):
    dev = DEVICES[name]
    assert dev.name == name and name.startswith(dev.family)
    assert dev.family in FAMILIES and dev.arch is FAMILIES[dev.family]
    assert isinstance(dev.part, str) and dev.part and isinstance(dev.package, str) and dev.package
    assert dev.speed is None or (isinstance(dev.speed, int) and dev.speed > 0)
    assert dev.pnr_args and all(isinstance(a, str) and a for a in dev.pnr_args)
    for field in ("user_io", "lut4", "dsp", "bram"):
        v = getattr(dev, field)
        assert isinstance(v, int) and not isinstance(v, bool) and v > 0, field


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_is_complete(name):
    fam = FAMILIES[name]
    assert fam.name == name
    assert set(fam.cells) == set(RESOURCE_CLASSES)
    for kind in ("lut4", "carry", "ff", "dsp", "bram"):
        assert fam.cells[kind], kind
    assert "my_top" in fam.synth_script("my_top") and "{" not in fam.synth_script("my_top")
    assert fam.nextpnr in toolchain.YOWASP
    assert isinstance(fam.carry_sites, int) and fam.carry_sites >= 0
    assert fam.placed_comb and fam.placed_dsp
    assert any(d.family == name for d in DEVICES.values())


def test_default_device_and_lookup_errors():
    assert devices.get_device(devices.DEFAULT_DEVICE).name == devices.DEFAULT_DEVICE
    assert devices.device_names() == tuple(DEVICES)
    with pytest.raises(ValueError, match=r"device must be one of ecp5-25f, ecp5-45f, ecp5-85f, "
                                         r"ice40-up5k, not 'xc7a35t'"):
        devices.get_device("xc7a35t")
    with pytest.raises(ValueError, match=r"family must be one of ecp5, ice40, not 'xc7'"):
        devices.get_family("xc7")


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise AssertionError("no subcommands")


@pytest.mark.parametrize("command", ["synth", "compare"])
def test_cli_device_choices_are_the_registry(command):
    from inhibitron.cli import build_parser

    sub = _subcommand(build_parser(), command)
    (device,) = [a for a in sub._actions if a.dest == "device"]
    assert tuple(device.choices) == tuple(DEVICES)
    assert device.default == devices.DEFAULT_DEVICE
