import pytest
import torch

from nst import losses


def test_content_loss_is_half_the_sum_of_squares():
    generated = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[0.0, 2.0], [5.0, 1.0]])
    # differences 1, 0, -2, 3 -> squares 1 + 0 + 4 + 9 = 14 -> 7
    assert losses.content_loss(generated, target).item() == pytest.approx(7.0)


def test_gram_is_inner_products_of_feature_maps():
    features = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]])
    # rows . rows: [1*1+2*2, 1*0+2*1+0*3; ., 0+1+9]
    assert torch.equal(losses.gram(features), torch.tensor([[5.0, 2.0], [2.0, 10.0]]))


def test_style_layer_loss_uses_gatys_normalisation():
    generated = torch.tensor([[5.0, 2.0], [2.0, 10.0]])
    target = torch.tensor([[4.0, 2.0], [0.0, 10.0]])
    # sum (G - A)^2 = 1 + 0 + 4 + 0 = 5; N = 2, M = 3 -> 5 / (4 * 4 * 9) = 5 / 144
    assert losses.style_layer_loss(generated, target, filters=2, positions=3).item() == pytest.approx(5 / 144)


def test_style_loss_weights_each_layer():
    assert losses.style_loss([torch.tensor(2.0), torch.tensor(10.0)], [0.5, 0.1]).item() == pytest.approx(2.0)


def test_total_variation_per_pixel():
    image = torch.tensor([[[[0.0, 1.0], [0.0, 3.0]]]])
    # horizontal: (1-0)^2 + (3-0)^2 = 10; vertical: 0 + (3-1)^2 = 4; 4 pixels -> 14 / 4
    assert losses.total_variation(image).item() == pytest.approx(3.5)


def test_total_loss_combines_terms():
    total = losses.total_loss(torch.tensor(2.0), torch.tensor(3.0), torch.tensor(5.0), alpha=10, beta=100, gamma=1000)
    assert total.item() == pytest.approx(20 + 300 + 5000)


def test_as_matrix_reads_filters_by_positions_in_any_memory_layout():
    activations = torch.arange(24, dtype=torch.float32).reshape(1, 2, 3, 4)
    expected = activations.reshape(2, 12)
    assert torch.equal(losses.as_matrix(activations), expected)
    assert torch.equal(losses.as_matrix(activations.contiguous(memory_format=torch.channels_last)), expected)


def test_gram_gradient_matches_autograd_in_both_layouts():
    features = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(losses.gram, (features,))
    activations = torch.randn(1, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    weights = torch.randn(3, 3, dtype=torch.float64)
    (losses.gram(losses.as_matrix(activations).double()) * weights).sum().backward()
    reference = activations.detach().clone().requires_grad_(True)
    matrix = reference.reshape(3, 20)
    ((matrix @ matrix.T) * weights).sum().backward()
    assert torch.allclose(activations.grad, reference.grad)


def test_gram_and_loss_sums_stay_float32_under_bf16_autocast():
    features = torch.randn(1, 8, 6, 5).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        matrix = losses.as_matrix(features)
        assert torch.mm(matrix, matrix.T).dtype == torch.bfloat16  # what autocast does to a plain product
        gram = losses.gram(matrix)
        assert gram.dtype == torch.float32
        assert losses.style_layer_loss(gram, gram.detach() * 0.5, 8, 30).dtype == torch.float32
        assert losses.content_loss(features, features.float() * 0.5).dtype == torch.float32
