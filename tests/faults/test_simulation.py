"""Seeded, disjoint fault roles; label flipping; stragglers; per-client inputs."""

import numpy as np
import pytest

from tff_lab import faults
from tff_lab import tasks
from tff_lab.faults import simulation


def test_roles_are_disjoint_counted_and_seeded():
  sampled = [f'c{i}' for i in range(20)]
  config = faults.FaultConfig(byzantine_fraction=0.2, dropout_fraction=0.1,
                              straggler_fraction=0.25)
  roles = faults.assign_roles(sampled, config, seed=3, round_num=7)
  assert (len(roles.byzantine), len(roles.dropped), len(roles.stragglers)) == (4, 2, 5)
  groups = [set(roles.byzantine), set(roles.dropped), set(roles.stragglers)]
  assert sum(map(len, groups)) == len(set.union(*groups))
  assert roles == faults.assign_roles(sampled, config, seed=3, round_num=7)
  assert roles != faults.assign_roles(sampled, config, seed=3, round_num=8)
  assert dict(roles.metrics()) == {'faults/byzantine': 4, 'faults/dropped': 2,
                                   'faults/stragglers': 5}


@pytest.mark.parametrize('kwargs, match', [
    ({'byzantine_fraction': 1.0}, 'byzantine_fraction must be in'),
    ({'dropout_fraction': -0.1}, 'dropout_fraction must be in'),
    ({'attack': 'backdoor'}, "unknown attack 'backdoor'"),
    ({'attack_scale': 0.0}, 'attack_scale must be positive'),
    ({'byzantine_fraction': 0.5, 'dropout_fraction': 0.5}, 'leave no honest client'),
    ({'byzantine_fraction': 0.3, 'straggler_fraction': 0.8}, 'exceed 1'),
])
def test_invalid_fault_settings(kwargs, match):
  with pytest.raises(ValueError, match=match):
    faults.FaultConfig(**kwargs).validate(clients_per_round=10)


@pytest.mark.parametrize('name, kind, expect', [
    ('digits', 'sparse_categorical', lambda y: 9 - y),
    ('seed_linear', 'sign', lambda y: -y),
])
def test_label_flip(name, kind, expect):
  task = tasks.create_task(name)
  cid = task.train_data.client_ids[0]
  raw = task.train_data.create_tf_dataset_for_client(cid)
  flipped = simulation.flip_labels(raw, kind, num_classes=10)
  for a, b in zip(raw.as_numpy_iterator(), flipped.as_numpy_iterator()):
    np.testing.assert_array_equal(b['y'], expect(a['y']))
    np.testing.assert_array_equal(b['x'], a['x'])


def test_label_flip_binary():
  task = tasks.create_task('seed_linear', {'model': 'logistic'})
  raw = task.train_data.create_tf_dataset_for_client(task.train_data.client_ids[0])
  flipped = simulation.flip_labels(raw, 'binary', 2)
  for a, b in zip(raw.as_numpy_iterator(), flipped.as_numpy_iterator()):
    np.testing.assert_array_equal(b['y'], 1.0 - a['y'])


def test_stragglers_do_partial_work():
  task = tasks.create_task('seed_linear')
  rng = np.random.default_rng(0)
  epochs = {simulation.straggler_task(task.with_train_spec(num_epochs=5), 40, rng)
            .train_spec.num_epochs for _ in range(200)}
  assert epochs == {1, 2, 3, 4}  # FedProx: uniform in {1, ..., E-1}
  caps = [simulation.straggler_task(task, 40, rng).train_spec.max_elements for _ in range(200)]
  assert min(caps) >= 1 and max(caps) <= 39 and len(set(caps)) > 20


def test_client_inputs_apply_roles():
  task = tasks.create_task('digits', {'model': 'mlp'})
  sampled = task.train_data.client_ids[:10]
  config = faults.FaultConfig(byzantine_fraction=0.2, attack='scale', attack_scale=3.0,
                              dropout_fraction=0.2)
  roles = faults.assign_roles(sampled, config, 0, 1)
  inputs = faults.build_client_inputs(task, sampled, roles, config, 0, 1, 10, lambda p: p)
  assert len(inputs) == 8  # two dropped
  kinds = [int(next(iter(i['attack']))['kind']) for i in inputs]
  assert sorted(kinds) == [0] * 6 + [2] * 2
  plain = faults.build_client_inputs(task, sampled, faults.assign_roles(
      sampled, faults.FaultConfig(), 0, 1), faults.FaultConfig(), 0, 1, 10, lambda p: p)
  assert len(plain) == 10 and not isinstance(plain[0], dict)
