"""Project-wide pytest settings."""

import os

# Never reach for a model hub: every model comes from a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# pytest-xdist already runs one worker per core: one thread per worker avoids
# oversubscription (small torch ops ran ~25x slower with the default).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


# -- cosimulation element counts (tests/sim/test_cosim_million.py records them with
#    record_property; the reports reach the controller under pytest-xdist too) --
_COSIM = {"elements": 0, "mismatches": 0, "configs": set()}


def pytest_runtest_logreport(report):
    if report.when != "call":
        return
    props = dict(report.user_properties)
    if "cosim_elements" in props:
        _COSIM["elements"] += int(props["cosim_elements"])
        _COSIM["mismatches"] += int(props.get("cosim_mismatches", 0))
        _COSIM["configs"].add(props.get("cosim_config"))


def pytest_terminal_summary(terminalreporter):
    if _COSIM["elements"]:
        terminalreporter.write_line(
            f"cosim: {_COSIM['elements']:,} elements compared, {_COSIM['mismatches']} mismatches "
            f"({len(_COSIM['configs'])} configurations)")
