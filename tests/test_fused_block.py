"""The one-node branches of a VSS block (vmamba_zoo.layers.fused_block) equal the module path.

Output and the gradient of the input and of every parameter, in fp32 and under bf16 autocast, with the
LayerNorms in PyTorch's kernel and in the Triton kernel.  The Triton kernels run through Triton's
interpreter on CPU (natively on CUDA).
"""
import pytest
import torch

import vmamba_zoo.layers.fused_block as fused_block
from vmamba_zoo.layers.fused_block import fast_branches_apply, mixer_branch, mlp_branch, vss_block
from vmamba_zoo.models.vmamba import VSSBlock
from vmamba_zoo_kernels.dispatch import triton_available

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(not triton_available(), reason="triton is not installed")


def _v2_block(dim=8, conv_bias=False, scan="cross", seed=0, drop_path=0.0, d_state=1):
    torch.manual_seed(seed)
    block = VSSBlock(dim, drop_path=drop_path, ssm_d_state=d_state, ssm_ratio=2.0, ssm_conv_bias=conv_bias,
                     ssm_gate=False, scan=scan, mlp_ratio=4.0).to(DEVICE)
    with torch.no_grad():  # non-trivial norms, skip and bias
        for p in block.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.3)
    return block


def _grads(fn, x, params):
    out = fn(x)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out.device)
    grads = torch.autograd.grad((out.float() * weight).sum(), [x] + params)
    return out, grads


@pytest.mark.parametrize("triton_norm", [False, True])
@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("conv_bias,scan", [(False, "cross"), (True, "bi"), (False, "atrous")])
def test_branches_match_modules(monkeypatch, triton_norm, bf16, conv_bias, scan):
    if triton_norm:  # take the Triton LayerNorm for every norm (on CPU it runs through the interpreter)
        monkeypatch.setattr(fused_block, "use_triton_layer_norm", lambda x, norm: True)
    block = _v2_block(conv_bias=conv_bias, scan=scan)
    x = torch.randn(2, 5, 6, 8, device=DEVICE, requires_grad=True)
    tol = dict(rtol=3e-2, atol=3e-2) if bf16 else dict(rtol=2e-4, atol=2e-5)
    for fast, reference, params in (
            (mixer_branch, lambda t: block.op(block.norm(t)), [p for n, p in block.named_parameters()
                                                              if n.startswith(("norm.", "op."))]),
            (mlp_branch, lambda t: block.mlp(block.norm2(t)), [p for n, p in block.named_parameters()
                                                              if n.startswith(("norm2.", "mlp."))])):
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=bf16):
            got, got_grads = _grads(lambda t: fast(block, t), x, params)
            ref, ref_grads = _grads(reference, x, params)
        assert got.dtype == ref.dtype and got.shape == ref.shape
        torch.testing.assert_close(got.float(), ref.float(), **tol)
        for g, r, p in zip(got_grads, ref_grads, [x] + params):
            assert g.dtype == p.dtype and g.shape == p.shape
            # bf16 gradients of the sums over all pixels (weights, biases) compare in norm
            err = (g.float() - r.float()).norm() / r.float().norm().clamp_min(1e-12)
            assert err < (3e-2 if bf16 else 1e-4), (fast.__name__, tuple(p.shape), float(err))


def test_route_coverage_flags():
    """cross / bi cover every pixel on every route (the kernels skip the zero fills); atrous does not."""
    from vmamba_zoo.scan import create_scan_pattern

    assert create_scan_pattern("cross", 8).routes_cover_map(5, 6)
    assert create_scan_pattern("bi", 8).routes_cover_map(5, 6)
    assert not create_scan_pattern("atrous", 8).routes_cover_map(5, 6)


def test_inference_branches_match_modules():
    block = _v2_block(seed=3).eval()
    x = torch.randn(2, 4, 7, 8, device=DEVICE)
    with torch.no_grad():
        for _ in range(2):  # the second call reuses the cached weight casts
            torch.testing.assert_close(mixer_branch(block, x), block.op(block.norm(x)), rtol=2e-4, atol=2e-5)
            torch.testing.assert_close(mlp_branch(block, x), block.mlp(block.norm2(x)), rtol=2e-4, atol=2e-5)
        block.op.in_proj.weight.mul_(0.5)  # an in-place update must not be hidden by the cache
        torch.testing.assert_close(mixer_branch(block, x), block.op(block.norm(x)), rtol=2e-4, atol=2e-5)


def test_fast_path_applies_only_to_the_v2_configuration():
    x = torch.randn(1, 4, 4, 8, device=DEVICE)
    v2 = _v2_block()
    gated = VSSBlock(8, ssm_d_state=1, ssm_gate=True, mlp_ratio=4.0).to(DEVICE)
    channel_first = VSSBlock(8, ssm_d_state=1, ssm_gate=False, channel_first=True).to(DEVICE)
    assert fast_branches_apply(v2, x) == (x.is_cuda and triton_available())
    assert not fast_branches_apply(gated, x)
    assert not fast_branches_apply(channel_first, x.permute(0, 3, 1, 2))
    with torch.autocast(DEVICE, dtype=torch.float16, enabled=DEVICE == "cuda"):
        if DEVICE == "cuda":  # fp16 autocast keeps PyTorch's fp32 LayerNorm policy: module path
            assert not fast_branches_apply(v2, x)
    with pytest.raises(ValueError, match="bf16 autocast, no autocast"):
        mixer_branch(v2, x.to(torch.float16))


def test_fast_path_mlp_dropout_rule():
    """The MLP branch runs fused with no dropout (Identity at rate 0), or a Dropout in eval; checked on
    the predicate itself, which the device gate of ``fast_branches_apply`` hides on the CPU."""
    from vmamba_zoo.layers.fused_block import _mlp_supported

    no_drop = _v2_block()
    assert isinstance(no_drop.mlp.drop, torch.nn.Identity)
    assert _mlp_supported(no_drop.train()) and _mlp_supported(no_drop.eval())
    dropping = VSSBlock(8, ssm_d_state=1, ssm_gate=False, mlp_ratio=4.0, mlp_drop_rate=0.1)
    assert isinstance(dropping.mlp.drop, torch.nn.Dropout)
    assert not _mlp_supported(dropping.train())
    assert _mlp_supported(dropping.eval())


def _node_names(node) -> set:
    names, stack, seen = set(), [node], set()
    while stack:
        n = stack.pop()
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        names.add(type(n).__name__)
        stack.extend(f for f, _ in n.next_functions)
    return names


@pytest.mark.skipif(DEVICE != "cuda", reason="the block takes the fast path on CUDA only")
def test_block_forward_takes_fast_path_and_matches():
    block = _v2_block().train()
    x = torch.randn(2, 6, 6, 8, device=DEVICE, requires_grad=True)
    params = list(block.parameters())
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        got, got_grads = _grads(block, x, params)
        block.use_fast_branches = False
        ref, ref_grads = _grads(block, x, params)
    assert type(got.grad_fn).__name__ == "_FusedBlockBackward"  # the whole block is one node
    assert "_FusedBlockBackward" not in _node_names(ref.grad_fn)
    torch.testing.assert_close(got.float(), ref.float(), rtol=3e-2, atol=3e-2)
    for g, r in zip(got_grads, ref_grads):
        assert ((g.float() - r.float()).norm() / r.float().norm().clamp_min(1e-12)) < 3e-2


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_branches_under_activation_checkpointing(use_reentrant):
    """Gradient checkpointing (what set_grad_checkpointing does) recomputes the branches in the backward:
    same gradients as without it (a reentrant checkpoint first runs them without autograd)."""
    from torch.utils.checkpoint import checkpoint

    block = _v2_block(seed=5)
    x = torch.randn(2, 4, 5, 8, device=DEVICE, requires_grad=True)
    params = list(block.parameters())

    def both(t):
        t = t + mixer_branch(block, t)
        return t + mlp_branch(block, t)

    def grads_by_backward(fn):  # a reentrant checkpoint refuses torch.autograd.grad
        for t in [x] + params:
            t.grad = None
        out = fn(x)
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out.device)
        (out * weight).sum().backward()
        return out, [t.grad.clone() for t in [x] + params]

    ref_out, ref_grads = grads_by_backward(both)
    got_out, got_grads = grads_by_backward(lambda t: checkpoint(both, t, use_reentrant=use_reentrant))
    torch.testing.assert_close(got_out, ref_out, rtol=1e-5, atol=1e-6)
    for g, r in zip(got_grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def _module_block(block, t):
    """The module path of a VSS block (what VSSBlock.forward runs off the fast path)."""
    t = t + block.drop_path(block.op(block.norm(t)))
    return t + block.drop_path(block.mlp(block.norm2(t)))


@pytest.mark.parametrize("bf16,drop_path,d_state", [(False, 0.0, 1), (True, 0.0, 1), (False, 0.5, 1), (True, 0.5, 1),
                                                     (False, 0.0, 8)])
def test_whole_block_matches_modules(bf16, drop_path, d_state):
    """vss_block (one node: both branches, the residual adds and timm's drop-path factors) equals the module
    path: output, input gradient and every parameter's gradient (dtype and shape too).  With drop path the
    same seed draws the same per-sample factors (some samples dropped, the others scaled by 1/keep).  N = 8
    takes the step-by-step forward kernel (A read as A_logs there too)."""
    block = _v2_block(seed=11, drop_path=drop_path, d_state=d_state).train()
    x = torch.randn(4, 5, 6, 8, device=DEVICE, requires_grad=True)
    params = list(block.parameters())
    tol = dict(rtol=3e-2, atol=3e-2) if bf16 else dict(rtol=2e-4, atol=2e-5)
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=bf16):
        torch.manual_seed(1)
        got, got_grads = _grads(lambda t: vss_block(block, t), x, params)
        torch.manual_seed(1)
        ref, ref_grads = _grads(lambda t: _module_block(block, t), x, params)
    assert type(got.grad_fn).__name__ == "_FusedBlockBackward"
    assert got.dtype == ref.dtype and got.shape == ref.shape
    torch.testing.assert_close(got.float(), ref.float(), **tol)
    if drop_path:  # the factors changed the output (else this case would test nothing new)
        with torch.no_grad(), torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=bf16):
            plain = _module_block(block.eval(), x)  # eval: no drop path
        block.train()
        assert (plain.float() - ref.float()).abs().max() > 0.1
    for g, r, p in zip(got_grads, ref_grads, [x] + params):
        assert g.dtype == p.dtype and g.shape == p.shape
        err = (g.float() - r.float()).norm() / r.float().norm().clamp_min(1e-12)
        assert err < (3e-2 if bf16 else 1e-4), (tuple(p.shape), float(err))


def test_two_forwards_then_one_backward():
    """Two forwards through one block before a single backward (a shared backbone, e.g. two views): each
    forward casts the weights into a new buffer, so the first node's saved weights are intact."""
    block = _v2_block(seed=4).train()
    x1 = torch.randn(2, 4, 5, 8, device=DEVICE, requires_grad=True)
    x2 = torch.randn(2, 4, 5, 8, device=DEVICE, requires_grad=True)
    params = list(block.parameters())
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        got = torch.autograd.grad((vss_block(block, x1).float().sum() + (vss_block(block, x2).float() ** 2).sum()),
                                  [x1, x2] + params)
        ref = torch.autograd.grad((_module_block(block, x1).float().sum()
                                   + (_module_block(block, x2).float() ** 2).sum()), [x1, x2] + params)
    for g, r in zip(got, ref):
        assert ((g.float() - r.float()).norm() / r.float().norm().clamp_min(1e-12)) < 3e-2


def test_cast_group_and_gradient_casts():
    """One multi-tensor copy casts a group exactly as .to would, into fresh contiguous views; gradients
    that need it are reshaped and cast to their parameters' dtypes, the others returned as they are."""
    from vmamba_zoo.layers.fused_block import _cast_group, _grads_as_params

    tensors = [torch.randn(3, 4), torch.randn(5), torch.randn(2, 1, 3, 3)]
    cast = _cast_group(tensors, torch.bfloat16)
    for c, t in zip(cast, tensors):
        assert c.dtype == torch.bfloat16 and c.shape == t.shape and c.is_contiguous()
        assert torch.equal(c, t.to(torch.bfloat16))
    assert _cast_group(tensors, torch.bfloat16)[0].data_ptr() != cast[0].data_ptr()  # a new buffer each call
    params = [torch.zeros(3, 4), None, torch.zeros(2, 6), torch.zeros(5)]
    fp32_grad = torch.randn(5)
    grads = [torch.randn(3, 4, dtype=torch.bfloat16), torch.randn(7), torch.randn(12, dtype=torch.bfloat16), fp32_grad]
    out = _grads_as_params(grads, params)
    assert out[1] is None and out[3] is fp32_grad
    assert out[0].dtype == torch.float32 and torch.equal(out[0], grads[0].float())
    assert out[2].shape == (2, 6) and torch.equal(out[2], grads[2].float().view(2, 6))
    # three or more to cast: one flat cast
    grads3 = [torch.randn(3, 4, dtype=torch.bfloat16), torch.randn(4, dtype=torch.bfloat16),
              torch.randn(12, dtype=torch.bfloat16), torch.randn(5, dtype=torch.bfloat16)]
    params3 = [torch.zeros(3, 4), torch.zeros(4), torch.zeros(2, 6), torch.zeros(5)]
    for g, p, o in zip(grads3, params3, _grads_as_params(grads3, params3)):
        assert o.dtype == torch.float32 and o.shape == p.shape and torch.equal(o, g.float().view(p.shape))
    # a depth-wise conv weight's gradient in channels-last memory: the parameter's strides (DDP's buckets
    # warn and copy otherwise), cast or not
    for dtype in (torch.float32, torch.bfloat16):
        grad = torch.randn(4, 3, 3, 1, dtype=dtype).permute(0, 3, 1, 2)
        param = torch.zeros(4, 1, 3, 3)
        assert grad.stride() != param.stride()
        (out,) = _grads_as_params([grad], [param])
        assert out.stride() == param.stride() and torch.equal(out, grad.float())


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_whole_block_under_activation_checkpointing(use_reentrant):
    """Checkpointing recomputes the block in the backward, drop-path factors included (the checkpoint
    restores the RNG state): same gradients as without it."""
    from torch.utils.checkpoint import checkpoint

    block = _v2_block(seed=6, drop_path=0.5).train()
    x = torch.randn(4, 4, 5, 8, device=DEVICE, requires_grad=True)
    params = list(block.parameters())

    def grads_by_backward(fn):
        for t in [x] + params:
            t.grad = None
        torch.manual_seed(3)
        out = fn(x)
        (out * torch.linspace(-1, 1, out.numel(), device=out.device).view(out.shape)).sum().backward()
        return out, [t.grad.clone() for t in [x] + params]

    ref_out, ref_grads = grads_by_backward(lambda t: vss_block(block, t))
    got_out, got_grads = grads_by_backward(lambda t: checkpoint(vss_block, block, t, use_reentrant=use_reentrant))
    torch.testing.assert_close(got_out, ref_out, rtol=1e-5, atol=1e-6)
    for g, r in zip(got_grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_block_diagonal_with_padded_blocks():
    """block_cols > R: each route's (D, R) weight sits in the first R columns of its (D, block_cols) block, zeros
    elsewhere, so multiplying whole x_proj rows (R dt features, then B and C) gives each route's dt projection."""
    from vmamba_zoo.layers.fused_core import block_diagonal

    weight = torch.randn(3, 4, 2)
    padded = block_diagonal(weight, block_cols=5)
    assert padded.shape == (12, 15)
    rows = torch.randn(7, 3, 5)  # 3 routes x (2 dt features + 3 others)
    expected = torch.einsum("kdr,pkr->pkd", weight, rows[..., :2]).reshape(7, 12)
    torch.testing.assert_close(rows.reshape(7, 15) @ padded.t(), expected)
    torch.testing.assert_close(block_diagonal(weight), block_diagonal(weight, block_cols=2))
    with pytest.raises(ValueError, match="block_cols"):
        block_diagonal(weight, block_cols=1)
