"""Grouping: which runs train together, and how many."""

import torch

from actrange import plan as plan_module
from actrange.config import ExperimentConfig, apply_overrides
from actrange.plan import choose_group_size, make_groups


def test_groups_are_cut_in_a_stable_order_and_size():
    runs = apply_overrides(ExperimentConfig(), {"seeds": [0, 1, 2]}).runs()
    groups = make_groups(runs, 5)
    assert [len(g.runs) for g in groups] == [5, 5, 2]
    assert make_groups(list(reversed(runs)), 5) == groups
    labels = [r.label for g in groups for r in g.runs]
    assert labels == sorted(labels)  # one activation's runs sit together


def test_incompatible_runs_never_share_a_group():
    short = apply_overrides(ExperimentConfig(), {"epochs": 2}).runs()
    wide = apply_overrides(ExperimentConfig(), {"epochs": 2, "batch_size": 64}).runs()
    groups = make_groups(short + wide, 16)
    assert sorted(len(g.runs) for g in groups) == [4, 4]
    for group in groups:
        assert len({r.batch_size for r in group.runs}) == 1


def test_group_size_follows_free_memory(monkeypatch):
    cpu = torch.device("cpu")
    per_model = plan_module.BYTES_PER_IMAGE * 128
    monkeypatch.setattr(plan_module, "available_memory", lambda device: 6 * per_model)
    assert choose_group_size(cpu, 128) == 3  # half the free memory
    monkeypatch.setattr(plan_module, "available_memory", lambda device: 10**15)
    assert choose_group_size(cpu, 128) == plan_module.CPU_GROUP
    monkeypatch.setattr(plan_module, "available_memory", lambda device: 1)
    assert choose_group_size(cpu, 128) == 1  # alone, never zero
    assert choose_group_size(cpu, 128, requested=7) == 7
