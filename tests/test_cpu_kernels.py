"""The compiled CPU kernels against hand-computed values and against PyTorch's own operations."""

import shutil

import pytest
import torch
import torch.nn.functional as F

from actrange import cpu_kernels
from actrange.engine import initial_state
from actrange.grouped import activation_plan, group_forward, to_group_layout
from tests.test_engine import make_run

CHANNELS_LAST = torch.channels_last


@pytest.fixture
def kernels(monkeypatch, tmp_path):
    """The kernels built afresh into a temporary cache; each test sees its own status."""
    monkeypatch.setenv("ACTRANGE_CACHE", str(tmp_path))
    monkeypatch.delenv("ACTRANGE_KERNELS", raising=False)
    cpu_kernels.kernel_status.cache_clear()
    yield cpu_kernels
    cpu_kernels.kernel_status.cache_clear()


@pytest.fixture
def built(kernels):
    status = kernels.kernel_status()
    assert status.available, status.reason  # CI installs a C compiler: never skipped there
    return kernels


def _conv_pool_reference(images, weight, bias):
    """PyTorch's grouped convolution then max_pool2d, with autograd."""
    group = weight.shape[0] // (8 if weight.shape[1] == 1 else 16)
    return F.max_pool2d(F.conv2d(images, weight, bias, padding=1, groups=group), 2)


def _parameters(group: int, seed: int = 0, channels: tuple[int, int] = (1, 8)):
    """conv1's parameters for ``group`` models, or conv2's with channels=(8, 16)."""
    inputs, outputs = channels
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(group * outputs, inputs, 3, 3, generator=generator) * 0.5 / inputs**0.5
    weight = weight.contiguous(memory_format=CHANNELS_LAST)  # as the engine stores it
    bias = torch.randn(group * outputs, generator=generator) * 0.1
    return weight.requires_grad_(), bias.requires_grad_()


def _images(batch: int, group: int, seed: int = 1) -> torch.Tensor:
    """Random images with a flat border region, where neighbouring outputs tie exactly."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, group, 28, 28, generator=generator)
    images[:, :, :6] = -1.0  # background, like Fashion-MNIST's at [-1, 1]
    return images.contiguous(memory_format=CHANNELS_LAST)


def test_conv_pool_on_one_pixel_matches_hand_computed_values(built):
    # one image, one model; pixel (3, 5) is 1, all else 0
    images = torch.zeros(1, 1, 28, 28)
    images[0, 0, 3, 5] = 1.0
    weight = torch.zeros(8, 1, 3, 3)
    weight[0, 0, 1, 1] = 2.0  # channel 0 sees the pixel itself: output (3, 5) = bias + 2
    weight[1, 0, 0, 0] = -1.0  # channel 1 sees its top-left neighbour: output (4, 6) = bias - 1
    bias = torch.arange(8.0) / 10  # channel c is c/10 wherever the pixel is out of reach
    weight.requires_grad_()
    bias.requires_grad_()

    pooled = built.Conv1Pool.apply(images.contiguous(memory_format=CHANNELS_LAST), weight, bias)

    expected = (torch.arange(8.0) / 10)[:, None, None].expand(8, 14, 14).clone()
    expected[0, 1, 2] = 2.0  # window rows 2-3, cols 4-5 holds (3, 5): 0 + 2
    # channel 1's window rows 4-5, cols 6-7 holds 0.1 - 1 at its top-left; the max is 0.1
    assert torch.equal(pooled[0], expected)

    # the gradient of window (1, 2) of channel 0 flows to output (3, 5), whose 3x3 input patch
    # has the pixel at its centre; every pooled output adds its gradient to its channel's bias
    upstream = torch.zeros(1, 8, 14, 14)
    upstream[0, 0, 1, 2] = 1.0
    upstream[0, 1, 2, 3] = 1.0  # channel 1's winner there read no pixel: no weight gradient
    weight_grad, bias_grad = torch.autograd.grad(pooled, [weight, bias], upstream)
    expected_weight_grad = torch.zeros(8, 1, 3, 3)
    expected_weight_grad[0, 0, 1, 1] = 1.0
    assert torch.equal(weight_grad, expected_weight_grad)
    assert torch.equal(bias_grad, torch.tensor([1.0, 1.0, 0, 0, 0, 0, 0, 0]))


def test_a_tie_goes_to_the_first_position_in_scan_order_as_in_max_pool2d(built):
    # pixels (2, 4), (3, 5) and (4, 6) are 1; the kernel weighs the centre by 1 and the
    # bottom-right neighbour by 0.5, so outputs (2, 4) and (3, 5) of window (1, 2) are both 1.5
    images = torch.zeros(1, 1, 28, 28)
    images[0, 0, [2, 3, 4], [4, 5, 6]] = 1.0
    weight = torch.zeros(8, 1, 3, 3)
    weight[0, 0, 1, 1], weight[0, 0, 2, 2] = 1.0, 0.5
    weight.requires_grad_()
    bias = torch.zeros(8, requires_grad=True)
    images = images.contiguous(memory_format=CHANNELS_LAST)

    pooled = built.Conv1Pool.apply(images, weight, bias)
    assert pooled[0, 0, 1, 2] == 1.5
    upstream = torch.zeros(1, 8, 14, 14)
    upstream[0, 0, 1, 2] = 1.0
    (weight_grad,) = torch.autograd.grad(pooled, [weight], upstream)
    # the winner is (2, 4), scanned first: its patch has the pixels at the centre and bottom
    # right; (3, 5)'s would also have one at the top left
    expected = torch.zeros(3, 3)
    expected[1, 1], expected[2, 2] = 1.0, 1.0
    assert torch.equal(weight_grad[0, 0], expected)
    reference = _conv_pool_reference(images, weight, bias)
    assert torch.equal(torch.autograd.grad(reference, [weight], upstream)[0][0, 0], expected)


@pytest.mark.parametrize("group,batch", [(1, 5), (3, 7), (4, 16)])
def test_conv_pool_matches_convolution_then_max_pool(built, group, batch):
    images = _images(batch, group)
    weight, bias = _parameters(group)
    reference = _conv_pool_reference(images, weight, bias)
    pooled = built.Conv1Pool.apply(images, weight, bias)
    torch.testing.assert_close(pooled, reference, rtol=1e-5, atol=1e-6)
    assert pooled.is_contiguous(memory_format=CHANNELS_LAST)

    upstream = torch.randn(reference.shape, generator=torch.Generator().manual_seed(2))
    expected = torch.autograd.grad(reference, [weight, bias], upstream)
    got = torch.autograd.grad(pooled, [weight, bias], upstream)
    for want, have in zip(expected, got, strict=True):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-5)


def test_conv_pool_forward_does_not_depend_on_the_thread_count(built):
    images = _images(9, 2)
    weight, bias = _parameters(2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = built.Conv1Pool.apply(images, weight, bias)
        torch.set_num_threads(2)
        split = built.Conv1Pool.apply(images, weight, bias)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(alone, split)


def _features(batch: int, group: int, seed: int = 5) -> torch.Tensor:
    """conv2's input: 8 maps of 14x14 per model, with a flat band where outputs tie exactly."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, group * 8, 14, 14, generator=generator)
    x[:, :, :5] = 0.25
    return x.contiguous(memory_format=CHANNELS_LAST).requires_grad_()


def test_conv2_pool_on_one_pixel_matches_hand_computed_values(built):
    # one image, one model; input channel 3 is 1 at (6, 9), all else 0
    x = torch.zeros(1, 8, 14, 14)
    x[0, 3, 6, 9] = 1.0
    x = x.contiguous(memory_format=CHANNELS_LAST).requires_grad_()
    weight = torch.zeros(16, 8, 3, 3)
    weight[5, 3, 0, 2] = 3.0  # output channel 5 reads channel 3 up-right: output (7, 8) = 3
    weight[9, 3, 1, 1] = -2.0  # channel 9 reads it at the centre: output (6, 9) = bias - 2
    bias = torch.arange(16.0) / 100
    weight, bias = weight.requires_grad_(), bias.requires_grad_()

    pooled = built.Conv2Pool.apply(x, weight, bias)

    expected = (torch.arange(16.0) / 100)[:, None, None].expand(16, 7, 7).clone()
    expected[5, 3, 4] = 3.05  # window rows 6-7, cols 8-9 holds output (7, 8)
    assert torch.equal(pooled[0], expected)  # channel 9's window keeps its bias, 0.09 > -1.91

    # window (3, 4) of channel 5 won at (7, 8), bottom-left: its gradient reaches channel 3's
    # pixel through the up-right tap, and that tap's weight
    upstream = torch.zeros(1, 16, 7, 7)
    upstream[0, 5, 3, 4] = 2.0
    # channel 9's window (0, 0) is four equal outputs (its bias): the first, (0, 0), wins
    upstream[0, 9, 0, 0] = 1.0
    x_grad, weight_grad, bias_grad = torch.autograd.grad(pooled, [x, weight, bias], upstream)
    expected_x_grad = torch.zeros(1, 8, 14, 14)
    expected_x_grad[0, 3, 6, 9] = 6.0  # 2 x weight 3; the winner's other taps weigh 0
    expected_x_grad[0, 3, 0, 0] = -2.0  # 1 x channel 9's centre weight, at its winner (0, 0)
    assert torch.equal(x_grad, expected_x_grad)
    expected_weight_grad = torch.zeros(16, 8, 3, 3)
    expected_weight_grad[5, 3, 0, 2] = 2.0  # 2 x the pixel's 1; channel 9's winner read zeros
    assert torch.equal(weight_grad, expected_weight_grad)
    expected_bias_grad = torch.zeros(16)
    expected_bias_grad[5], expected_bias_grad[9] = 2.0, 1.0
    assert torch.equal(bias_grad, expected_bias_grad)


@pytest.mark.parametrize("group,batch", [(1, 3), (3, 7), (4, 16)])
def test_conv2_pool_matches_convolution_then_max_pool(built, group, batch):
    x = _features(batch, group)
    weight, bias = _parameters(group, channels=(8, 16))
    reference = _conv_pool_reference(x, weight, bias)
    pooled = built.Conv2Pool.apply(x, weight, bias)
    torch.testing.assert_close(pooled, reference, rtol=1e-5, atol=1e-6)
    assert pooled.is_contiguous(memory_format=CHANNELS_LAST)

    upstream = torch.randn(reference.shape, generator=torch.Generator().manual_seed(6))
    expected = torch.autograd.grad(reference, [x, weight, bias], upstream)
    got = torch.autograd.grad(pooled, [x, weight, bias], upstream)
    # sums of hundreds of products in another order: absolute rounding, relative where large
    for want, have in zip(expected, got, strict=True):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-4)
    assert got[1].is_contiguous(memory_format=CHANNELS_LAST)  # stored as the weight is


def test_conv2_pool_does_not_depend_on_the_thread_count_beyond_its_sums(built):
    # 5 images in 4 slices of 2: the last slice is empty and must add nothing
    x = _features(5, 2)
    weight, bias = _parameters(2, channels=(8, 16))
    upstream = torch.randn(5, 32, 7, 7, generator=torch.Generator().manual_seed(7))
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 4, 1):
            torch.set_num_threads(count)
            pooled = built.Conv2Pool.apply(x, weight, bias)
            results.append((pooled, *torch.autograd.grad(pooled, [x, weight, bias], upstream)))
    finally:
        torch.set_num_threads(threads)
    one, two, one_again = results
    for a, b in zip(one, one_again, strict=True):
        assert torch.equal(a, b)  # same thread count, same bits
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])  # per image: exact
    for a, b in zip(one[2:], two[2:], strict=True):  # summed over slices: rounding only
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_max_pool_is_max_pool2d_bit_for_bit_ties_and_nan_included(built):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(5, 16, 14, 14, generator=generator).round()  # rounding makes many ties
    x[0, 0, 0, 1] = float("nan")
    x = x.contiguous(memory_format=CHANNELS_LAST).requires_grad_()
    upstream = torch.randn(5, 16, 7, 7, generator=generator)

    reference = F.max_pool2d(x, 2)
    pooled = built.MaxPool.apply(x)
    torch.testing.assert_close(pooled, reference, rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(pooled[0, 0, 0, 0])
    (want,) = torch.autograd.grad(reference, [x], upstream)
    (have,) = torch.autograd.grad(pooled, [x], upstream)
    assert torch.equal(have, want)


def test_max_pool_of_odd_sizes_drops_the_last_row_and_column_as_max_pool2d_does(built):
    x = torch.randn(2, 8, 7, 5).contiguous(memory_format=CHANNELS_LAST).requires_grad_()
    upstream = torch.randn(2, 8, 3, 2)
    reference, pooled = F.max_pool2d(x, 2), built.MaxPool.apply(x)
    assert torch.equal(pooled, reference)
    want = torch.autograd.grad(reference, [x], upstream)[0]
    assert torch.equal(torch.autograd.grad(pooled, [x], upstream)[0], want)


def test_group_forward_gives_the_same_logits_and_gradients_either_way(kernels, monkeypatch):
    runs = [make_run("relu", seed=0), make_run("tanh", -5, 5, seed=1), make_run("elu", seed=2)]
    state = initial_state(runs, torch.device("cpu"))
    plan = activation_plan([r.activation for r in runs])
    images = to_group_layout(torch.randn(3, 16, 28, 28, generator=torch.Generator().manual_seed(4)))

    def logits_and_gradients():
        kernels.kernel_status.cache_clear()
        logits = group_forward(state.params, images, plan)
        gradients = torch.autograd.grad(logits.square().sum(), list(state.params.values()))
        return logits, gradients

    monkeypatch.setenv("ACTRANGE_KERNELS", "off")
    plain_logits, plain_gradients = logits_and_gradients()
    monkeypatch.setenv("ACTRANGE_KERNELS", "on")
    fused_logits, fused_gradients = logits_and_gradients()
    assert kernels.kernel_status().available  # CI installs a C compiler
    torch.testing.assert_close(fused_logits, plain_logits, rtol=1e-5, atol=1e-5)
    for fused, plain in zip(fused_gradients, plain_gradients, strict=True):
        torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)


def test_turned_off_by_the_environment(kernels, monkeypatch):
    monkeypatch.setenv("ACTRANGE_KERNELS", "off")
    status = kernels.kernel_status()
    assert not status.available
    assert "ACTRANGE_KERNELS" in status.reason


def test_no_compiler_means_the_pytorch_path_with_a_reason(kernels, monkeypatch):
    monkeypatch.setattr(cpu_kernels.shutil, "which", lambda name: None)
    status = kernels.kernel_status()
    assert not status.available
    assert "no C compiler" in status.reason


def test_a_failed_compile_is_reported_not_raised(kernels, monkeypatch, tmp_path):
    monkeypatch.setenv("CC", shutil.which("false") or "/bin/false")
    monkeypatch.setattr(cpu_kernels.shutil, "which", lambda name: "/bin/false")
    status = kernels.kernel_status()
    assert not status.available
    assert "failed" in status.reason
    assert not list(tmp_path.glob("kernels/*.so"))  # nothing half-written is left to load


def test_the_build_is_cached_and_reused(built, tmp_path):
    libraries = list(tmp_path.glob("kernels/pooled_conv-*.so"))
    assert len(libraries) == 1
    built.kernel_status.cache_clear()
    assert built.kernel_status().available
    assert list(tmp_path.glob("kernels/pooled_conv-*.so")) == libraries
