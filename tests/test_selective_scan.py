"""Selective-scan backends against the reference: outputs and every gradient.

On a CPU-only machine the Triton kernels run through Triton's interpreter
(TRITON_INTERPRET=1, set in conftest.py); with CUDA they run natively.
"""
import math
import time

import pytest
import torch

from vmamba_zoo_kernels import selective_scan, selective_scan_ref
from vmamba_zoo_kernels.cpu import linear_recurrence_chunked
from vmamba_zoo_kernels.dispatch import triton_available

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")
# mamba_ssm's test tolerances (rtol, atol) per input dtype
TOL = {torch.float32: (6e-4, 2e-3), torch.float16: (3e-3, 5e-3), torch.bfloat16: (3e-2, 5e-2)}
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def make_inputs(batch, dim, groups, n_state, length, dtype, *, seed=0, device=DEVICE, with_z=True,
                with_h0=False, grouped=True):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale)

    bc_shape = (batch, groups, n_state, length) if grouped else (batch, n_state, length)
    x = dict(
        u=rnd(batch, dim, length).to(dtype),
        delta=rnd(batch, dim, length, scale=0.5).to(dtype),
        A=-(torch.rand(dim, n_state, generator=g) * 2 + 0.05),
        B=rnd(*bc_shape).to(dtype),
        C=rnd(*bc_shape).to(dtype),
        D=rnd(dim),
        z=rnd(batch, dim, length).to(dtype) if with_z else None,
        delta_bias=rnd(dim, scale=0.3),
        initial_state=rnd(batch, dim, n_state) if with_h0 else None,
    )
    if dtype == torch.float64:
        x = {k: (v.double() if v is not None else None) for k, v in x.items()}
    return {k: (v.to(device).requires_grad_() if v is not None else None) for k, v in x.items()}


def run(fn, x, **kw):
    return fn(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, True,
              initial_state=x["initial_state"], **kw)


def grads(outputs, x, seed=1):
    g = torch.Generator().manual_seed(seed)
    out, last = outputs
    loss = (out.float() * torch.randn(out.shape, generator=g).to(out.device)).sum()
    loss = loss + (last * torch.randn(last.shape, generator=g).to(last.device)).sum()
    names = [n for n in GRAD_NAMES if x[n] is not None]
    return dict(zip(names, torch.autograd.grad(loss, [x[n] for n in names], allow_unused=True)))


def assert_close(actual, expected, dtype, name, scale=1.0):
    rtol, atol = TOL[dtype]
    actual, expected = actual.float(), expected.float()
    # relative to the tensor's magnitude (gradients of long sums grow with L)
    ref = expected.abs().max().clamp_min(1.0)
    err = (actual - expected).abs().max()
    assert err <= scale * (atol * ref + rtol * ref), f"{name}: max error {err:.3g} (magnitude {ref:.3g})"


def check_against_reference(backend, batch, dim, groups, n_state, length, dtype, reverse=False,
                            return_states=False, with_h0=False, deterministic=False, grouped=True):
    x = make_inputs(batch, dim, groups, n_state, length, dtype, with_h0=with_h0, with_z=not return_states,
                    grouped=grouped)
    kw = dict(reverse=reverse, return_states=return_states)
    out_dtype = torch.float32
    ours = run(selective_scan, x, backend=backend, deterministic=deterministic, out_dtype=out_dtype, **kw)
    # the reference sees the same (rounded) 16-bit inputs, computed in fp64
    x64 = {k: (v.detach().double().requires_grad_() if v is not None else None) for k, v in x.items()}
    ref = run(selective_scan_ref, x64, **kw)
    assert ours[0].dtype == out_dtype
    assert_close(ours[0], ref[0], dtype, "out")
    assert_close(ours[1], ref[1], dtype, "last_state")
    g_ours, g_ref = grads(ours, x), grads(ref, x64)
    for name, g_ref_n in g_ref.items():
        if g_ref_n is None:
            continue
        assert g_ours[name] is not None, f"no gradient for {name}"
        assert g_ours[name].shape == x[name].shape
        assert_close(g_ours[name], g_ref_n, dtype, f"d{name}", scale=5.0)


# (batch, dim, groups, N, L): L below, at and above one 256-step chunk; N = 1, 2, 4, 16; G = 1, 2, 4
TRITON_CASES = [
    (2, 8, 4, 1, 49, torch.float32, False),
    (1, 8, 2, 2, 196, torch.bfloat16, True),
    (1, 4, 1, 4, 300, torch.float16, False),
    (1, 8, 4, 16, 33, torch.float32, True),
    (2, 4, 2, 1, 600, torch.bfloat16, False),
]


@needs_triton
@pytest.mark.parametrize("batch,dim,groups,n_state,length,dtype,reverse", TRITON_CASES)
def test_triton_matches_reference(batch, dim, groups, n_state, length, dtype, reverse):
    check_against_reference("triton", batch, dim, groups, n_state, length, dtype, reverse=reverse)


@needs_triton
@pytest.mark.parametrize("reverse", [False, True])
def test_triton_states_mode_and_initial_state(reverse):
    check_against_reference("triton", 1, 4, 2, 2, 300, torch.float32, reverse=reverse, return_states=True,
                            with_h0=True)


@needs_triton
def test_triton_deterministic_backward_is_bitwise_reproducible():
    x = make_inputs(2, 8, 2, 2, 300, torch.float32)
    runs = []
    for _ in range(2):
        out = run(selective_scan, x, backend="triton", deterministic=True)
        runs.append(grads(out, x))
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name
    check_against_reference("triton", 2, 8, 2, 2, 300, torch.float32, deterministic=True, with_h0=True)


@needs_triton
def test_triton_ungrouped_bc():
    check_against_reference("triton", 1, 4, 1, 2, 40, torch.float32, grouped=False)


@needs_triton
def test_triton_op_compiles_fullgraph():
    x = make_inputs(1, 4, 2, 2, 20, torch.float32)

    def f(u, delta, A, B, C, D, z, bias):
        return selective_scan(u, delta, A, B, C, D, z, bias, True, backend="triton")

    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    expected = f(*args)
    got = compiled(*args)
    torch.testing.assert_close(got, expected)
    got.sum().backward()
    assert x["u"].grad is not None and torch.isfinite(x["u"].grad).all()


def assert_cpu_path_close(ours, ref, x):
    """Outputs, final states and the gradients of every input of the CPU path equal the reference's."""
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-4, atol=1e-5)
    g_ours, g_ref = grads(ours, x), grads(ref, x)
    for name in g_ref:
        if g_ref[name] is not None:
            torch.testing.assert_close(g_ours[name], g_ref[name], rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("reverse,return_states,with_h0", [(False, False, False), (True, False, True),
                                                           (False, True, True)])
@pytest.mark.parametrize("n_state,groups,length", [(1, 4, 49), (16, 2, 130), (2, 1, 1)])
def test_cpu_path_matches_reference(n_state, groups, length, reverse, return_states, with_h0):
    x = make_inputs(2, 8, groups, n_state, length, torch.float32, device="cpu", with_h0=with_h0,
                    with_z=not return_states)
    kw = dict(reverse=reverse, return_states=return_states)
    ours = run(selective_scan, x, backend="cpu", **kw)
    ref = run(selective_scan_ref, x, **kw)
    assert_cpu_path_close(ours, ref, x)


@pytest.mark.parametrize("n_state,reverse", [(1, False), (1, True), (3, False)])
def test_cpu_path_batch_slices_match_reference(n_state, reverse):
    # max_elements small enough that the batch runs in slices of one row (joined afterwards)
    from vmamba_zoo_kernels.cpu import selective_scan_chunked

    x = make_inputs(3, 8, 2, n_state, 20, torch.float32, device="cpu", with_h0=True)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    kw = dict(delta_softplus=True, return_last_state=True, initial_state=x["initial_state"], reverse=reverse)
    ours = selective_scan_chunked(*args, max_elements=8 * n_state * 20, **kw)
    ref = selective_scan_ref(*args, **kw)
    assert_cpu_path_close(ours, ref, x)


def test_fast_softplus_matches_softplus():
    from vmamba_zoo_kernels.cpu import fast_softplus

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20000, generator=g) * 8, torch.linspace(-30, 30, 6001),
                   torch.tensor([-100.0, -5.0, 20.0, 20.5, 100.0, 0.0])])
    ref = torch.nn.functional.softplus(x.double())
    for grad in (False, True):
        xi = x.clone().requires_grad_(grad)
        got = fast_softplus(xi)
        assert got.dtype == torch.float32
        normal = ref > 1e-30  # below, float32 results are subnormal: compared in absolute terms
        assert float(((got.double() - ref).abs() / ref)[normal].max()) < 2e-5
        assert float((got.double() - ref).abs()[~normal].max()) < 1e-38
    got.backward(torch.ones_like(got))  # d softplus / dx = sigmoid(x)
    torch.testing.assert_close(xi.grad, torch.sigmoid(x), rtol=1e-4, atol=1e-6)
    special = fast_softplus(torch.tensor([float("nan"), float("inf"), -float("inf")]))
    assert torch.isnan(special[0]) and special[1] == float("inf") and special[2] == 0.0
    assert torch.equal(fast_softplus(x.double()), ref)  # float64: exact softplus


def test_cpu_path_without_softplus_accepts_negative_delta():
    x = make_inputs(1, 8, 2, 2, 30, torch.float32, device="cpu", with_z=False)
    args = [x[k].detach() for k in ("u", "delta", "A", "B", "C")]
    assert (args[1] < 0).any()
    torch.testing.assert_close(selective_scan(*args, backend="cpu"), selective_scan_ref(*args), rtol=1e-4,
                               atol=1e-4)


def test_cpu_path_bf16_inputs_fp32_out():
    x = make_inputs(1, 8, 4, 1, 70, torch.bfloat16, device="cpu")
    ours = run(selective_scan, x, backend="cpu", out_dtype=torch.float32)
    x64 = {k: (v.detach().double() if v is not None else None) for k, v in x.items()}
    ref = run(selective_scan_ref, x64)
    assert ours[0].dtype == torch.float32
    torch.testing.assert_close(ours[0].double(), ref[0], rtol=1e-4, atol=1e-4)


def test_cpu_path_is_numerically_safe_for_fast_decay():
    # exp(sum of Δ·A) over the sequence underflows to 0 and its inverse overflows;
    # the chunked recurrence never forms either
    x = make_inputs(1, 4, 1, 2, 500, torch.float32, device="cpu")
    with torch.no_grad():
        x["A"].mul_(50.0)
        ours = run(selective_scan, x, backend="cpu")
        ref = run(selective_scan_ref, x)
    assert torch.isfinite(ours[0]).all()
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-4, atol=1e-5)


def test_reference_gradcheck_float64():
    x = make_inputs(1, 4, 2, 2, 6, torch.float64, device="cpu", with_h0=True)
    names = [n for n in GRAD_NAMES if x[n] is not None]

    def f(*args):
        kw = dict(zip(names, args))
        return selective_scan_ref(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"], kw["z"],
                                  kw["delta_bias"], True, True, initial_state=kw["initial_state"])

    assert torch.autograd.gradcheck(f, [x[n] for n in names], eps=1e-6, atol=1e-5)


def test_linear_recurrence_chunk_sizes_agree():
    a = torch.rand(37, 3, dtype=torch.float64)
    b = torch.randn(37, 3, dtype=torch.float64)
    h0 = torch.randn(3, dtype=torch.float64)
    expected, h = [], h0
    for t in range(37):
        h = a[t] * h + b[t]
        expected.append(h)
    expected = torch.stack(expected)
    for chunk in (1, 2, 5, 6, 37, 64):
        torch.testing.assert_close(linear_recurrence_chunked(a, b, h0, chunk=chunk), expected)


def test_cpu_path_much_faster_than_step_loop():
    """The chunked path at batch 1, dim 384, G 4, N 1, L 3136 against the per-step loop of the reference.

    Measured: about 10x on two idle cores, about 3.5x on one (the issue's target is 20x).  One thread,
    best-of-N timings and interleaved rounds (the best round counts) keep the comparison stable on a
    loaded machine, where a single best-of-7 block still read 2.2x now and then; 2.5x still fails if the
    path falls back to anything like a loop over time steps, or computes on subnormal floats (|A| up to
    2 makes the decay products underflow: 1.3x)."""
    x = make_inputs(1, 384, 4, 1, 3136, torch.float32, device="cpu", with_z=False)
    args = [x[k].detach() if x[k] is not None else None for k in ("u", "delta", "A", "B", "C", "D", "z",
                                                                  "delta_bias")]

    def best(fn, repeat):
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rounds = []
    try:
        with torch.no_grad():
            selective_scan(*args, True, backend="cpu")  # warm-up (allocator, first-call dispatch)
            # interleaved rounds: a burst of load on a shared machine slows one round, not the comparison
            for _ in range(4):
                fast = best(lambda: selective_scan(*args, True, backend="cpu"), 3)
                slow = best(lambda: selective_scan_ref(*args, True), 1)
                rounds.append((slow / fast, fast, slow))
    finally:
        torch.set_num_threads(threads)
    ratio, fast, slow = max(rounds)
    assert ratio > 2.5, f"chunked {fast * 1e3:.1f} ms vs step loop {slow * 1e3:.1f} ms in the best of {rounds}"


@pytest.mark.parametrize("bad,match", [
    (dict(delta=torch.zeros(2, 8, 9)), "delta must have u's shape"),
    (dict(A=torch.zeros(8, 65)), "between 1 and 64"),
    (dict(A=torch.zeros(7, 4)), "A must be"),
    (dict(B=torch.zeros(2, 3, 4, 10), C=torch.zeros(2, 3, 4, 10)), "divisible by the number of groups"),
    (dict(D=torch.zeros(7)), "D must be"),
    (dict(z=torch.zeros(2, 8, 11)), "z must have"),
    (dict(delta=torch.zeros(2, 8, 10, dtype=torch.float16)), "delta must have u's dtype"),
    (dict(initial_state=torch.zeros(2, 8, 3)), "initial_state must be"),
])
def test_bad_inputs_have_clear_errors(bad, match):
    args = dict(u=torch.zeros(2, 8, 10), delta=torch.zeros(2, 8, 10), A=torch.zeros(8, 4),
                B=torch.zeros(2, 2, 4, 10), C=torch.zeros(2, 2, 4, 10), D=None, z=None, initial_state=None)
    args.update(bad)
    h0 = args.pop("initial_state")
    with pytest.raises(ValueError, match=match):
        selective_scan(**args, initial_state=h0)


def test_unknown_backend_and_triton_on_cpu_errors(monkeypatch):
    x = make_inputs(1, 4, 1, 1, 5, torch.float32, device="cpu", with_z=False)
    with pytest.raises(ValueError, match="unknown backend"):
        run(selective_scan, x, backend="cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if triton_available():
        with pytest.raises(ValueError, match="runs on CUDA tensors"):
            run(selective_scan, x, backend="triton")


def test_non_contiguous_inputs():
    x = make_inputs(1, 8, 2, 2, 30, torch.float32, device="cpu")
    u_nc = x["u"].detach().transpose(1, 2).contiguous().transpose(1, 2)  # stride(-1) != 1
    assert u_nc.stride(-1) != 1
    args = dict(delta=x["delta"].detach(), A=x["A"].detach(), B=x["B"].detach(), C=x["C"].detach())
    expected = selective_scan_ref(x["u"].detach(), **args)
    for backend in ["cpu"] + (["triton"] if triton_available() else []):
        dev = DEVICE if backend == "triton" else "cpu"
        got = selective_scan(u_nc.to(dev), backend=backend, **{k: v.to(dev) for k, v in args.items()})
        torch.testing.assert_close(got.cpu(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_triton_gradients_of_gapped_and_overlapping_inputs():
    """u, delta and z as strided views that are not dense (every other channel of a wider tensor) or overlap
    (a broadcast delta): the backward writes each gradient through its input's strides, so it reads such
    inputs as contiguous copies; gradients equal those of contiguous inputs."""
    x = make_inputs(2, 8, 2, 2, 21, torch.float32, device=DEVICE)
    dense = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in x.items()}
    wide = {k: torch.stack([v.detach(), torch.full_like(v.detach(), float("nan"))], -1).requires_grad_()
            for k, v in x.items() if k in ("u", "z")}
    gapped = dict(x, u=wide["u"][..., 0], z=wide["z"][..., 0])  # stride 2 along time: not dense
    assert gapped["u"].stride(-1) == 2
    expected = grads(run(selective_scan, dense, backend="triton"), dense)
    got = grads(run(selective_scan, gapped, backend="triton"), gapped)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-5, msg=name)
    row = x["delta"].detach()[:, :1].clone().requires_grad_()
    broadcast = dict(dense, delta=row.expand(-1, 8, -1))  # stride 0 across the channels: overlapping
    expected_row = torch.autograd.grad(run(selective_scan, dict(dense, delta=row.expand(-1, 8, -1).contiguous()),
                                           backend="triton")[0].sum(), row)[0]
    got_row = torch.autograd.grad(run(selective_scan, broadcast, backend="triton")[0].sum(), row)[0]
    torch.testing.assert_close(got_row, expected_row, rtol=1e-4, atol=1e-5)


# the step-by-step forward (wide states; forced on for every N here): outputs, final state and, through
# its chunk checkpoints, every gradient of the chunked backward; 16-step chunks, so L spans several
# (and ends inside one), with h0
SEQUENTIAL_CASES = [
    (2, 8, 4, 16, 45, torch.float32, False, True),
    (1, 8, 2, 2, 130, torch.bfloat16, True, False),
    (1, 4, 1, 1, 49, torch.float16, False, True),
    (1, 6, 3, 5, 20, torch.float32, True, False),
]


@needs_triton
@pytest.mark.parametrize("batch,dim,groups,n_state,length,dtype,reverse,with_h0", SEQUENTIAL_CASES)
def test_triton_sequential_forward_matches_reference(monkeypatch, batch, dim, groups, n_state, length, dtype,
                                                     reverse, with_h0):
    from vmamba_zoo_kernels import triton_scan

    launched = []
    real = triton_scan._launch_fwd_seq
    monkeypatch.setattr(triton_scan, "_launch_fwd_seq",
                        type("Counted", (), {"__getitem__": lambda self, grid: launched.append(grid) or real[grid]})())
    monkeypatch.setenv("VMAMBA_ZOO_SCAN_SEQ", "1")
    monkeypatch.setenv("VMAMBA_ZOO_SCAN_TILES", "8,16,4,8,4")  # 16-step chunks
    check_against_reference("triton", batch, dim, groups, n_state, length, dtype, reverse=reverse,
                            with_h0=with_h0)
    assert launched, "the step-by-step forward did not run"


def test_sequential_forward_is_chosen_for_wide_states_of_pixel_major_maps_only(monkeypatch):
    from vmamba_zoo_kernels.tiling import SEQUENTIAL_MIN_STATES, pick_sequential_tiles

    monkeypatch.delenv("VMAMBA_ZOO_SCAN_SEQ", raising=False)
    monkeypatch.delenv("VMAMBA_ZOO_SEQ_TILES", raising=False)
    assert pick_sequential_tiles(192, 1) is None
    assert pick_sequential_tiles(192, SEQUENTIAL_MIN_STATES - 1) is None
    assert pick_sequential_tiles(192, 16, pixel_major=False) is None  # strided steps: the chunked kernel
    tiles = pick_sequential_tiles(192, 16)
    assert tiles.block_d == 64 and tiles.warps == 4  # 64 channels x 16 states: 8 pairs per thread of 4 warps
    assert pick_sequential_tiles(96, 8).block_d == 32  # a power of two dividing the group size
    monkeypatch.setenv("VMAMBA_ZOO_SCAN_SEQ", "0")
    assert pick_sequential_tiles(192, 16) is None
    monkeypatch.setenv("VMAMBA_ZOO_SCAN_SEQ", "1")
    monkeypatch.setenv("VMAMBA_ZOO_SEQ_TILES", "32,8")
    assert pick_sequential_tiles(192, 1) == (32, 8)


@needs_triton
def test_triton_inference_builds_no_autograd_node(monkeypatch):
    """Without autograd the Triton scan is called directly (no Function node: host time), same values."""
    from vmamba_zoo_kernels import ops

    x = make_inputs(1, 4, 2, 2, 30, torch.float32)
    with_grad, last_with_grad = run(selective_scan, x, backend="triton")

    def no_function(*args):
        raise AssertionError("the autograd Function ran without autograd")

    monkeypatch.setattr(ops._EagerScan, "apply", no_function)
    with torch.no_grad():
        without, last_without = run(selective_scan, x, backend="triton")
    assert with_grad.grad_fn is not None and without.grad_fn is None and last_without.grad_fn is None
    torch.testing.assert_close(without, with_grad.detach(), rtol=0, atol=0)
    torch.testing.assert_close(last_without, last_with_grad.detach(), rtol=0, atol=0)
