"""Packing by indices gives exactly the batches of the clients' tf.data datasets."""

import numpy as np
import pytest
import tensorflow as tf

from tff_lab import faults
from tff_lab import tasks
from tff_lab.data import packing
from tff_lab.simulation import plan as plan_lib


def _plans(task, fault_config, round_num=1, clients=8):
  return list(plan_lib.RoundPlanner(task, clients, fault_config, seed=3).plan(round_num).clients)


@pytest.mark.parametrize('spec, fault_config', [
    ({'batch_size': 16, 'num_epochs': 1}, faults.FaultConfig()),
    # Reshuffled epochs, stragglers with fewer epochs, a label-flipping attacker, a dropout.
    ({'batch_size': 7, 'num_epochs': 3},
     faults.FaultConfig(straggler_fraction=0.3, byzantine_fraction=0.2, attack='label_flip',
                        dropout_fraction=0.1)),
    # A buffer smaller than the clients; stragglers cut by max_elements.
    ({'batch_size': 5, 'num_epochs': 1, 'shuffle_buffer_size': 4},
     faults.FaultConfig(straggler_fraction=0.5)),
    ({'batch_size': 10, 'num_epochs': 2, 'max_elements': 25, 'shuffle_buffer_size': 1},
     faults.FaultConfig()),
])
def test_index_packing_equals_dataset_packing(spec, fault_config):
  tf.random.set_seed(11)  # the loop fixes the global seed, which every shuffle combines
  task = tasks.create_task('digits', {'model': 'mlp', 'num_clients': 12, 'seed': 1})
  task = task.with_train_spec(**spec)
  for round_num in (1, 2):
    plans = _plans(task, fault_config, round_num)
    expected = packing.pack_client_datasets(
        faults.materialize_client_inputs(task, plans, num_classes=10))
    got = packing.ClientBatchPacker(task, num_classes=10).pack(plans)
    assert sorted(got) == sorted(expected)
    for key in expected:
      np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    if fault_config.attack == 'label_flip' and fault_config.byzantine_fraction:
      assert any(p.flip_labels for p in plans)


def test_batch_indices_are_a_permutation_per_epoch():
  tf.random.set_seed(0)
  spec = tasks.ClientSpec(num_epochs=2, batch_size=4)
  rows = packing.batch_indices([10, 3], [5, 6], [spec, spec], buffer_size=100, batch_size=4)
  assert [r.shape for r in rows] == [(5, 4), (2, 4)]
  flat = rows[0].ravel()
  np.testing.assert_array_equal(np.sort(flat[:10]), np.arange(10))
  np.testing.assert_array_equal(np.sort(flat[10:]), np.arange(10))
  assert not np.array_equal(flat[:10], flat[10:])  # reshuffled each epoch
  np.testing.assert_array_equal(np.sort(rows[1].ravel())[2:], [0, 0, 1, 1, 2, 2])
  assert (rows[1].ravel() == -1).sum() == 2  # 6 examples in batches of 4


def test_packer_refuses_per_round_preprocessing():
  task = tasks.create_task('seed_linear')
  assert packing.ClientBatchPacker.supports(task)
  task = task.__class__(**{**task.__dict__, 'example_preprocess': lambda ds: ds})
  assert not packing.ClientBatchPacker.supports(task)
  with pytest.raises(ValueError, match='preprocesses examples every round'):
    packing.ClientBatchPacker(task, num_classes=2)


def test_pack_pads_and_masks():
  task = tasks.create_task('seed_linear', {'num_clients': 2, 'examples_per_client': 12})
  task = task.with_train_spec(batch_size=4, shuffle_buffer_size=1)
  a = task.preprocess_train(task.train_data.create_tf_dataset_for_client('client_0'))
  b = task.preprocess_train(task.train_data.create_tf_dataset_for_client('client_1').take(5))
  packed = packing.pack_client_datasets([a, b])
  assert packed['x'].shape[:3] == (2, 3, 4)
  np.testing.assert_array_equal(packed['example_mask'].sum(axis=(1, 2)), [len(list(a.unbatch())),
                                                                          5])
  np.testing.assert_array_equal(packed['example_mask'][1], [[1, 1, 1, 1], [1, 0, 0, 0],
                                                            [0, 0, 0, 0]])
