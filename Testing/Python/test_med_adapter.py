"""The Med-Adapter itself: the FFT branch against a direct computation, depth resampling,
and float32 FFT under autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MedTuningCore.models.med_adapter import FourierFilter3d, MedAdapter, resample_depth_spectrum


def reference_fourier(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|IDFT(W * DFT(X) + b)| over (D, H, W), with the DFTs as explicit matrix products."""

    def dft_matrix(n: int, sign: int) -> np.ndarray:
        k = np.arange(n)
        return np.exp(sign * 2j * np.pi * np.outer(k, k) / n)

    _, _, d, h, wd = x.shape
    spec = np.einsum("ad,bh,cw,ijdhw->ijabc", dft_matrix(d, -1), dft_matrix(h, -1), dft_matrix(wd, -1), x)
    spec = spec * w.reshape(1, 1, d, 1, 1) + b.reshape(1, 1, d, 1, 1)
    back = np.einsum("ad,bh,cw,ijdhw->ijabc", dft_matrix(d, 1), dft_matrix(h, 1), dft_matrix(wd, 1), spec)
    return np.abs(back / (d * h * wd))


def test_fourier_branch_at_reference_depth_equals_direct_computation():
    layer = FourierFilter3d(reference_depth=6)
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(0.5, 1.5, 6).view(1, 1, 6, 1, 1))
        layer.bias.copy_(torch.linspace(-0.2, 0.3, 6).view(1, 1, 6, 1, 1))
    x = torch.randn(2, 3, 6, 5, 4, dtype=torch.float64)
    expected = reference_fourier(x.numpy(), layer.weight.detach().double().numpy().ravel(),
                                 layer.bias.detach().double().numpy().ravel())
    got = layer(x.float()).detach().double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_resampling_is_identity_at_reference_depth_and_keeps_the_dc_term():
    w = torch.randn(16)
    assert resample_depth_spectrum(w, 16) is w
    for depth in (1, 3, 7, 32):
        r = resample_depth_spectrum(w, depth)
        assert r.shape == (depth,)
        assert r[0] == w[0]  # frequency 0 maps onto frequency 0


def test_resampling_interpolates_linearly_in_frequency():
    # A filter linear in normalised frequency stays linear (inside the sampled range).
    d0 = 16
    freqs = torch.fft.fftfreq(d0)
    r = resample_depth_spectrum(2.0 * freqs + 1.0, 8)
    torch.testing.assert_close(r, 2.0 * torch.fft.fftfreq(8) + 1.0)


def test_resampled_filter_receives_gradients():
    layer = FourierFilter3d(reference_depth=8)
    layer(torch.randn(1, 2, 5, 4, 4)).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("depth", [1, 2, 5, 8, 13])
def test_adapter_built_for_d0_runs_at_other_depths(depth):
    adapter = MedAdapter(dim=48, alpha=6, reference_depth=8, inter_stage=True)
    tokens = torch.randn(2 * depth, 3, 3, 48)
    out, state = adapter(tokens, None, depth)
    assert out.shape == tokens.shape
    assert state.shape == (2, 8, depth, 3, 3)
    out2, state2 = adapter(tokens, state, depth)
    assert out2.shape == tokens.shape and state2.shape == state.shape


def test_plain_adapter_passes_the_inter_stage_state_through():
    adapter = MedAdapter(dim=48, alpha=6, reference_depth=8, inter_stage=False)
    state = torch.randn(1, 8, 4, 3, 3)
    _, out_state = adapter(torch.randn(4, 3, 3, 48), state, 4)
    assert out_state is state


def test_fft_runs_in_float32_under_autocast():
    layer = FourierFilter3d(reference_depth=4)
    x = torch.randn(1, 2, 4, 4, 4).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), layer(x.float()), rtol=1e-2, atol=1e-2)


def test_first_stage_alignment_of_zeros_is_its_bias():
    """The first stage gets zeros from 'the stage before'; A(0) is A's bias everywhere."""
    adapter = MedAdapter(dim=96, alpha=6, reference_depth=4, inter_stage=True, prev_hidden=8, downsample=True)
    like = torch.randn(1, 16, 4, 3, 3)
    direct = adapter.align.conv(torch.zeros(1, 8, 4, 6, 6))
    torch.testing.assert_close(adapter.align(None, like), direct)


def test_variants_differ_only_where_their_names_say():
    """med_adapter and med_adapter_paper share one architecture (their sets load alike); the
    ablation's variants drop the FFT branch or the inter-stage fusion from the default, which
    starts as the paper does (a random up-projection), and so do they."""
    from MedTuningCore.models import build_model

    def adapters(tuning):
        net = build_model(backbone="vit_tiny_patch16_224", decoder="unet", tuning=tuning, in_channels=1,
                          num_classes=2, img_size=32, reference_depth=8)
        return net, [m for m in net.modules() if isinstance(m, MedAdapter)]

    default, default_adapters = adapters("med_adapter")
    paper, paper_adapters = adapters("med_adapter_paper")
    assert {k: v.shape for k, v in default.state_dict().items()} == {k: v.shape for k, v in paper.state_dict().items()}
    assert all(not a.up.weight.any() and not a.up.bias.any() for a in default_adapters)
    assert all(a.up.weight.any() for a in paper_adapters)
    _, no_fft = adapters("med_adapter_no_fft")
    assert all(a.fourier is None for a in no_fft) and len(no_fft) == len(default_adapters)
    assert all(a.fourier is not None for a in paper_adapters)
    _, no_fusion = adapters("med_adapter_no_fusion")
    assert not any(a.inter_stage for a in no_fusion)
    _, one_scale = adapters("med_adapter_no_conv5")
    assert all(a.branch5 is None and a.branch3 is not None and a.fourier is not None for a in one_scale)
    assert all(a.branch5 is not None for a in paper_adapters)
    assert all(a.up.weight.any() for a in no_fft + no_fusion + one_scale)
    assert sum(a.inter_stage for a in default_adapters) == 4  # the 4 stage ends of a 12-block ViT


def test_the_late_variant_runs_the_first_half_of_the_backbone_forward_only():
    """med_adapter_late: adapters in stages 2-3 only and the position embedding frozen, so no
    block before the first adapter is on the autograd tape (what makes its step cheaper)."""
    from MedTuningCore.models import build_model

    net = build_model(backbone="vit_tiny_patch16_224", decoder="unet", tuning="med_adapter_late", in_channels=1,
                      num_classes=2, img_size=32, reference_depth=8)
    backbone = net.backbone
    adapted = [isinstance(m, MedAdapter) for m in backbone.post_block]
    assert adapted == [False] * 6 + [True] * 6
    assert not backbone.vit.pos_embed.requires_grad and backbone.vit.norm.weight.requires_grad
    on_tape = []
    for block in backbone.vit.blocks:
        block.register_forward_hook(lambda _m, _i, out: on_tape.append(out.requires_grad))
    net.train()
    net(torch.randn(1, 1, 8, 32, 32)).sum().backward()
    assert on_tape == [False] * 7 + [True] * 5  # block 6 feeds the first adapter: it needs no gradient either
    fused = [m for m in backbone.post_block if isinstance(m, MedAdapter) and m.inter_stage]
    assert len(fused) == 2 and all(m.up.weight.grad is not None for m in fused)


def test_a_late_start_past_the_last_stage_is_refused_not_silently_empty():
    """A backbone with too few stages for the late variant would train no adapter: say so."""
    from MedTuningCore.errors import ModelConfigError
    from MedTuningCore.models import build_model
    from MedTuningCore.models.tuning import insert_med_adapters

    backbone = build_model(backbone="vit_tiny_patch16_224", decoder="unet", tuning="head", in_channels=1,
                           num_classes=2, img_size=32, reference_depth=8).backbone
    with pytest.raises(ModelConfigError, match="4 stages.*med_adapter_paper"):
        insert_med_adapters(backbone, alpha=6, reference_depth=8, first_stage=4)
    insert_med_adapters(backbone, alpha=6, reference_depth=8, first_stage=3)  # the last stage alone is allowed
    assert sum(isinstance(m, MedAdapter) for m in backbone.post_block) == 3


def slices_reached(adapter: MedAdapter, depth: int, changed: int) -> list[bool]:
    """Which output slices change when input slice `changed` does (tokens of 2 x 2)."""
    torch.nn.init.normal_(adapter.up.weight)
    x = torch.randn(depth, 2, 2, adapter.down.in_features)
    y = x.clone()
    y[changed] += 1.0
    adapter.eval()
    with torch.no_grad():
        a, _ = adapter(x, None, depth)
        b, _ = adapter(y, None, depth)
    return [not torch.allclose(a[i], b[i]) for i in range(depth)]


def test_adapter_without_fft_still_mixes_slices():
    adapter = MedAdapter(24, alpha=4, reference_depth=8, fourier=False)
    assert slices_reached(adapter, depth=5, changed=4)[3]  # the depth-wise convolutions reach the neighbour


def test_pre_block_variant_runs_each_adapter_before_its_block():
    """med_adapter_pre_block is med_adapter_paper on the other side of each block: the same
    modules and shapes (only the container's name differs), adapter i runs just before
    block i, and the inter-stage state still reaches the next stage's fusing adapter."""
    from MedTuningCore.models import build_model
    from MedTuningCore.models.tuning import med_adapters

    def model(tuning):
        torch.manual_seed(0)
        return build_model(backbone="vit_tiny_patch16_224", decoder="unet", tuning=tuning, in_channels=1,
                           num_classes=2, img_size=32, reference_depth=8)

    after, before = model("med_adapter_paper"), model("med_adapter_pre_block")
    assert before.backbone.post_block is None and len(before.backbone.pre_block) == len(before.backbone.blocks)
    shapes = {k.replace(".post_block.", ".pre_block."): v.shape for k, v in after.state_dict().items()}
    assert shapes == {k: v.shape for k, v in before.state_dict().items()}
    assert all(a.up.weight.any() for a in before.backbone.pre_block)  # the paper's start
    assert med_adapters(before.backbone) == list(before.backbone.pre_block)
    assert med_adapters(after.backbone) == list(after.backbone.post_block)

    calls: list[str] = []
    for i, (block, adapter) in enumerate(zip(before.backbone.blocks, before.backbone.pre_block)):
        block.register_forward_pre_hook(lambda *_, i=i: calls.append(f"block{i}"))
        adapter.register_forward_pre_hook(lambda *_, i=i: calls.append(f"adapter{i}"))
    handed_in, fused = [], []  # each fusing adapter's incoming state, and what it hands on
    for adapter in before.backbone.pre_block:
        if adapter.inter_stage:
            adapter.align.register_forward_pre_hook(lambda _, args: handed_in.append(args[0]))
            adapter.fuse.register_forward_hook(lambda _m, _a, out: fused.append(out))
    before.eval()
    with torch.no_grad():
        out = before(torch.randn(1, 1, 4, 32, 32))
    n = len(before.backbone.blocks)
    assert calls == [name for i in range(n) for name in (f"adapter{i}", f"block{i}")]
    assert out.shape == (1, 2, 4, 32, 32) and len(fused) == len(handed_in) == 4
    assert handed_in[0] is None  # only the first stage starts from nothing
    assert all(torch.equal(state, previous) for state, previous in zip(handed_in[1:], fused[:-1]))
    # the same weights placed after the blocks compute something else
    after.load_state_dict({k.replace(".pre_block.", ".post_block."): v for k, v in before.state_dict().items()})
    after.eval()
    with torch.no_grad():
        torch.manual_seed(1)
        x = torch.randn(1, 1, 4, 32, 32)
        assert not torch.allclose(after(x), before(x))


def test_unknown_placement_is_refused():
    from MedTuningCore.errors import ModelConfigError
    from MedTuningCore.models.backbones import create_backbone
    from MedTuningCore.models.tuning import insert_med_adapters

    backbone = create_backbone("vit_tiny_patch16_224", in_channels=1, img_size=32)
    with pytest.raises(ModelConfigError, match="placement"):
        insert_med_adapters(backbone, 6, 8, placement="inside")


def test_one_scale_adapter_uses_only_the_kernel_3_branch():
    """Without the kernel-5 branch a change 2 slices away no longer reaches a slice through
    the local branches (kernel 3 reaches 1 slice each way); with it, it does."""
    torch.manual_seed(0)
    for multi_scale in (True, False):
        adapter = MedAdapter(24, alpha=4, reference_depth=8, fourier=False, multi_scale=multi_scale)
        reached = slices_reached(adapter, depth=6, changed=4)
        assert reached[3] and reached[5]
        assert reached[2] == multi_scale and not reached[0]
