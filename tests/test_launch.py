"""CachedLauncher: which calls reuse a remembered compiled kernel and which go through Triton's own launch.

The logic is checked with stand-ins on the CPU (the interpreter never compiles); on a GPU the launcher
runs a real kernel and must match ``kernel[grid]``."""
import pytest
import torch

from vmamba_zoo_kernels import launch as launch_mod
from vmamba_zoo_kernels.dispatch import triton_available
from vmamba_zoo_kernels.launch import CachedLauncher


class _FakeCompiled:
    def __init__(self, log, tag):
        self.log, self.tag = log, tag

    def __getitem__(self, grid):
        assert len(grid) == 3, "CompiledKernel[grid] takes three grid dimensions"

        def run(*args, stream=None):
            self.log.append(("compiled", self.tag, grid, args, stream))
        return run


class _FakeKernel:
    """Stands in for a @triton.jit kernel f(x_ptr, y_ptr, n, BLOCK: constexpr)."""
    __name__ = "fake_kernel"
    arg_names = ["x_ptr", "y_ptr", "n", "BLOCK"]

    def __init__(self, returns_compiled=True):
        self.log, self.compiles, self.returns_compiled = [], 0, returns_compiled

    def __getitem__(self, grid):
        def run(*args, **options):
            self.compiles += 1
            self.log.append(("triton", grid, args, options))
            return _FakeCompiled(self.log, self.compiles) if self.returns_compiled else None
        return run


def _launcher(kernel):
    return CachedLauncher(kernel, fast=True, current_stream=lambda: (0, "stream0"))


def test_second_call_with_the_same_layout_launches_the_compiled_kernel():
    kernel = _FakeKernel()
    launch = _launcher(kernel)
    x, y = torch.zeros(32), torch.zeros(32)
    launch[(4,)](x, y, 32, BLOCK=8, num_warps=4)
    launch[(5,)](x, y, 32, BLOCK=8, num_warps=4)
    assert kernel.compiles == 1
    assert kernel.log[0] == ("triton", (4,), (x, y, 32, 8), {"num_warps": 4})  # constexpr passed by position
    kind, tag, grid, args, stream = kernel.log[1]
    assert (kind, tag, grid, stream) == ("compiled", 1, (5, 1, 1), "stream0") and args == (x, y, 32, 8)


@pytest.mark.parametrize("change", ["scalar", "scalar_type", "constexpr", "option", "dtype", "alignment"])
def test_a_call_differing_in_what_triton_specialises_on_goes_through_triton(change):
    kernel = _FakeKernel()
    launch = _launcher(kernel)
    x, y = torch.zeros(64), torch.zeros(64)
    launch[(1,)](x, y, 32, BLOCK=8, num_warps=4)
    args, kwargs = [x, y, 32], dict(BLOCK=8, num_warps=4)
    if change == "scalar":
        args[2] = 33
    elif change == "scalar_type":
        args[2] = 32.0  # equal to 32 as a dict key, another type to Triton
    elif change == "constexpr":
        kwargs["BLOCK"] = 16
    elif change == "option":
        kwargs["num_warps"] = 8
    elif change == "dtype":
        args[0] = torch.zeros(64, dtype=torch.float64)
    else:
        args[1] = y[1:]  # 4 bytes past a 16-byte boundary
    launch[(1,)](*args, **kwargs)
    assert kernel.compiles == 2
    launch[(1,)](*args, **kwargs)  # and is remembered too
    assert kernel.compiles == 2


def test_tensor_after_a_scalar_is_an_error():
    launch = _launcher(_FakeKernel())
    x = torch.zeros(4)
    launch[(1,)](x, x, 4, BLOCK=8)
    with pytest.raises(ValueError, match="must come first"):
        launch[(1,)](x, 4, x, BLOCK=8)
    with pytest.raises(ValueError, match="expected 2 leading tensor"):
        launch[(1,)](x, x, x, BLOCK=8)


def test_keyword_parameters_complete_the_positional_ones_in_order():
    kernel = _FakeKernel()
    launch = _launcher(kernel)
    x = torch.zeros(4)
    launch[(1,)](x, x, BLOCK=8, n=4)  # keywords in any order: passed on in signature order
    assert kernel.log[-1][2] == (x, x, 4, 8)
    with pytest.raises(ValueError, match="in order"):
        launch[(1,)](x, x, BLOCK=8)  # n missing


def test_nothing_is_remembered_when_the_launch_returns_no_compiled_kernel():
    kernel = _FakeKernel(returns_compiled=False)  # e.g. tools/check_kernel_compile.py intercepting launches
    launch = _launcher(kernel)
    x = torch.zeros(4)
    for _ in range(3):
        launch[(1,)](x, x, 4, BLOCK=8)
    assert kernel.compiles == 3


def test_memory_starts_over_past_its_size(monkeypatch):
    monkeypatch.setattr(launch_mod, "MAX_ENTRIES", 3)
    kernel = _FakeKernel()
    launch = _launcher(kernel)
    x = torch.zeros(4)
    for n in range(5):
        launch[(1,)](x, x, n, BLOCK=8)
    assert len(launch._compiled) == 2  # cleared at the fourth, then the fourth and fifth
    launch[(1,)](x, x, 0, BLOCK=8)
    assert kernel.compiles == 6


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_interpreted_kernels_launch_through_triton_each_time():
    from vmamba_zoo_kernels.layer_norm import _get_kernels
    from triton.runtime.jit import JITFunction

    fwd, _ = _get_kernels()
    x = torch.randn(4, 8)
    y = torch.empty_like(x)
    stats = torch.empty(4)
    if isinstance(fwd.fn, JITFunction):
        pytest.skip("Triton compiles here (no interpreter)")
    for _ in range(2):
        fwd[(1,)](x, x[0], x[0], y, stats, stats, x, 4, 8, 1e-5, 0, BLOCK_M=4, BLOCK_C=8, HAS_W=False, HAS_B=False,
                  SILU_GATE=False)
    assert fwd.fast is False and not fwd._compiled
    torch.testing.assert_close(y, torch.nn.functional.layer_norm(x, (8,)))


@pytest.mark.skipif(not torch.cuda.is_available() or not triton_available(), reason="needs CUDA and Triton")
def test_cached_launch_matches_triton_launch_on_gpu():
    from vmamba_zoo_kernels.layer_norm import _get_kernels, _tiles

    fwd, _ = _get_kernels()
    x = torch.randn(300, 96, device="cuda", dtype=torch.bfloat16)
    w, b = torch.randn(96, device="cuda"), torch.randn(96, device="cuda")
    block_m, block_c, warps = _tiles(96)
    outs = []
    for launcher in (fwd.fn, fwd, fwd):  # Triton's launch, then the launcher's first (Triton) and second call
        y = torch.empty_like(x)
        mean, rstd = torch.empty(300, device="cuda"), torch.empty(300, device="cuda")
        launcher[(-(-300 // block_m),)](x, w, b, y, mean, rstd, x, 300, 96, 1e-5, 0, BLOCK_M=block_m,
                                        BLOCK_C=block_c, HAS_W=True, HAS_B=True, SILU_GATE=False, num_warps=warps)
        outs.append(y)
    assert fwd.fast and len(fwd._compiled) >= 1
    ref = torch.nn.functional.layer_norm(x.float(), (96,), w, b, 1e-5).to(torch.bfloat16)
    for y in outs:
        torch.testing.assert_close(y, ref, atol=2e-2, rtol=2e-2)
        assert torch.equal(y, outs[0])
