"""Every Triton kernel compiles for a CUDA target (sm_90) without a GPU (``tools/check_kernel_compile.py``):
the CPU suite runs the kernels through Triton's interpreter, which checks what they compute but not
that the compiler takes them."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vmamba_zoo_kernels.dispatch import triton_available

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not triton_available(), reason="triton is not installed")


def _env():
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)  # compilable JIT functions, not the interpreter's
    return env


def test_every_kernel_compiles_for_sm90():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "check_kernel_compile.py")], capture_output=True,
                          text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all compiled for sm_90" in proc.stdout
    compiled = {line.rsplit(": ", 1)[-1].split(" (")[0] for line in proc.stdout.splitlines() if line.startswith("ok")}
    assert {"_scan_fwd_kernel", "_scan_fwd_seq_kernel", "_scan_bwd_kernel", "_dwconv3x3_kernel", "ln_fwd", "ln_bwd",
            "sasf_readout_kernel", "_haar_source_map_kernel", "_haar_merge_kernel"} <= compiled


def test_a_kernel_the_compiler_rejects_is_reported(tmp_path):
    """The check can fail: a kernel the interpreter would run (an arange of 3) does not compile."""
    (tmp_path / "bad_kernel.py").write_text(textwrap.dedent('''
        import triton
        import triton.language as tl

        @triton.jit
        def bad(x_ptr, n, BLOCK: tl.constexpr):
            offs = tl.arange(0, 3)  # not a power of two
            tl.store(x_ptr + offs, tl.zeros((3,), tl.float32), mask=offs < n)
    '''))
    script = textwrap.dedent(f'''
        import importlib.util, sys, torch
        sys.path.insert(0, {str(tmp_path)!r})
        spec = importlib.util.spec_from_file_location("check", {str(ROOT / "tools" / "check_kernel_compile.py")!r})
        check = importlib.util.module_from_spec(spec); spec.loader.exec_module(check)
        from bad_kernel import bad
        with check._Launches() as launches:
            bad[(1,)](torch.zeros(4), 4, BLOCK=4)
        (kernel, arguments, options), = launches.records
        try:
            check._compile(kernel, arguments, options, 90)
        except Exception as exc:
            print("REJECTED", type(exc).__name__)
        else:
            print("COMPILED")
    ''')
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=300)
    assert "REJECTED" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
