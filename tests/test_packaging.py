"""Packaging checks: every subpackage is installed, the kernels keep their distinct name."""
import configparser
import importlib
from pathlib import Path

import setuptools

ROOT = Path(__file__).resolve().parents[1]


def _declared_packages():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return {p.strip() for p in cfg["options"]["packages"].split() if p.strip()}


def test_every_subpackage_is_declared():
    found = {"vmamba_zoo." + p if p else "vmamba_zoo" for p in [""] + setuptools.find_packages(ROOT / "vmamba_zoo")}
    found |= {"vmamba_zoo_kernels." + p for p in setuptools.find_packages(ROOT / "kernels")}
    found.add("vmamba_zoo_kernels")
    missing = found - _declared_packages()
    assert not missing, f"add these packages to setup.cfg [options] packages: {sorted(missing)}"


def test_kernels_import_name_does_not_shadow_hf_kernels():
    mod = importlib.import_module("vmamba_zoo_kernels")
    assert Path(mod.__file__).resolve().parent == ROOT / "kernels"
    assert "kernels" not in _declared_packages()
