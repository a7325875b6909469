"""The names the report gives activations, schedules and ranges."""

from actrange.wording import display_activation, display_name, format_range


def test_ranges_are_compact_and_have_no_negative_zero():
    assert format_range(-1.0, 1.0) == "[-1, 1]"
    assert format_range(-0.5, 10) == "[-0.5, 10]"
    assert format_range(-0.0, 1) == "[0, 1]"


def test_legends_name_a_schedule_compactly():
    assert display_activation("leaky_relu") == "Leaky ReLU"
    assert display_activation("tanh>relu@5") == "Tanh→ReLU@5"
    assert display_activation("custom") == "custom"


def test_sentences_name_a_switch_in_words():
    assert display_name("relu") == "ReLU"
    assert display_name("tanh>relu@5") == "Tanh→ReLU (switch at epoch 5)"
    assert display_name("mish") == "mish"


def test_a_legend_and_a_sentence_spell_an_activation_alike():
    for label in ("relu", "tanh", "gelu", "silu", "leaky_relu", "elu", "sigmoid", "softsign"):
        assert display_activation(label) == display_name(label)
