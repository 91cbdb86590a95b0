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


def test_native_kernel_source_is_package_data():
    """The native CPU kernel compiles kernels/csrc/*.c at run time: an installed wheel must carry it."""
    import fnmatch

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"].get("vmamba_zoo_kernels", "").split(",") if p.strip()]
    sources = [p.relative_to(ROOT / "kernels").as_posix() for p in (ROOT / "kernels" / "csrc").glob("*.c")]
    assert sources, "kernels/csrc/*.c not found"
    for source in sources:
        assert any(fnmatch.fnmatch(source, pattern) for pattern in patterns), (
            f"kernels/{source} is not in setup.cfg [options.package_data] vmamba_zoo_kernels: {patterns}")
