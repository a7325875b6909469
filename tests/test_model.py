"""The study's CNN: shapes, parameter count, seeded initialisation, switching."""

import torch

from actrange.model import N_PARAMS, StudyCNN, initial_parameters


def test_parameter_count_is_the_studys():
    # conv: 80 + 1168 + 4640 + 18496 + 36928; linear: 36928 + 2080 + 330
    assert sum(p.numel() for p in StudyCNN().parameters()) == N_PARAMS == 100_650


def test_shapes_through_the_network():
    record: dict[str, torch.Tensor] = {}
    logits = StudyCNN("tanh")(torch.zeros(3, 1, 28, 28), record)
    assert logits.shape == (3, 10)
    shapes = {name: tuple(t.shape) for name, t in record.items()}
    assert shapes == {
        "conv1": (3, 8, 28, 28),
        "conv2": (3, 16, 14, 14),
        "conv3": (3, 32, 7, 7),
        "conv4": (3, 64, 5, 5),
        "conv5": (3, 64, 3, 3),
        "lin1": (3, 64),
        "lin2": (3, 32),
    }


def test_initialisation_depends_on_the_seed_only():
    torch.manual_seed(999)
    first = initial_parameters(3)
    StudyCNN()  # building other models in between must not matter
    second = initial_parameters(3)
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = initial_parameters(4)
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])


def test_initialisation_leaves_the_callers_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    initial_parameters(11)
    assert torch.equal(torch.rand(3), expected)


def test_switching_changes_the_forward_function():
    model = StudyCNN("relu")
    model.load_state_dict(initial_parameters(0))
    images = torch.randn(2, 1, 28, 28)
    relu_logits = model(images)
    model.switch_activation("tanh")
    tanh_logits = model(images)
    assert not torch.allclose(relu_logits, tanh_logits)
    model.switch_activation("relu")
    assert torch.equal(model(images), relu_logits)
