"""Round plans: made once per round, a pure function of (seed, round), faults applied."""

import numpy as np
import pytest

from tff_lab import faults
from tff_lab import tasks
from tff_lab.simulation import plan as plan_lib


@pytest.fixture(scope='module')
def task():
  return tasks.create_task('digits', {'num_clients': 20, 'model': 'mlp'})


def test_a_plan_is_a_pure_function_of_seed_and_round(task):
  planner = plan_lib.RoundPlanner(task, 8, seed=3)
  assert planner.plan(5) == plan_lib.RoundPlanner(task, 8, seed=3).plan(5)
  assert planner.plan(5).sampled != planner.plan(6).sampled
  assert planner.plan(5).sampled != plan_lib.RoundPlanner(task, 8, seed=4).plan(5).sampled


def test_a_fault_free_plan_trains_every_sampled_client_with_the_tasks_work(task):
  plan = plan_lib.RoundPlanner(task, 8, seed=0).plan(1)
  assert len(set(plan.sampled)) == 8
  assert set(plan.sampled) <= set(task.train_data.client_ids)
  assert plan.client_ids == plan.sampled and plan.num_dropped == 0
  assert all(c.train_spec == task.train_spec and not c.flip_labels and c.attack is None
             for c in plan.clients)
  seeds = [c.shuffle_seed for c in plan.clients]
  assert len(set(seeds)) == len(seeds)  # every client shuffles differently


def test_faults_change_roles_but_not_sampling_or_shuffling(task):
  config = faults.FaultConfig(byzantine_fraction=0.25, attack='label_flip',
                              dropout_fraction=0.25, straggler_fraction=0.25)
  clean = plan_lib.RoundPlanner(task, 8, seed=1).plan(2)
  faulty = plan_lib.RoundPlanner(task, 8, config, seed=1).plan(2)
  assert faulty.sampled == clean.sampled
  roles = faulty.roles
  assert (len(roles.byzantine), len(roles.dropped), len(roles.stragglers)) == (2, 2, 2)
  assert len(set(roles.byzantine + roles.dropped + roles.stragglers)) == 6
  # The dropped never report; the others keep their sampling order and shuffle seeds.
  assert faulty.client_ids == tuple(c for c in clean.sampled if c not in roles.dropped)
  clean_seeds = {c.client_id: c.shuffle_seed for c in clean.clients}
  assert all(c.shuffle_seed == clean_seeds[c.client_id] for c in faulty.clients)
  flipped = {c.client_id for c in faulty.clients if c.flip_labels}
  assert flipped == set(roles.byzantine)
  reduced = {c.client_id for c in faulty.clients if c.train_spec != task.train_spec}
  assert reduced <= set(roles.stragglers) and reduced  # stragglers do less work
  assert faulty.fault_metrics()['faults/dropped'] == 2


def test_sampling_is_uniform_without_replacement(task):
  planner = plan_lib.RoundPlanner(task, 5, seed=0)
  counts = dict.fromkeys(task.train_data.client_ids, 0)
  for r in range(1, 801):
    for c in planner.plan(r).sampled:
      counts[c] += 1
  # Inclusion probability 5/20 for every client; 800 rounds: binomial std ≈ 0.015.
  np.testing.assert_allclose(np.array(list(counts.values())) / 800, 0.25, atol=0.06)


def test_impossible_plans_are_refused(task):
  with pytest.raises(ValueError, match=r'clients_per_round must be in \[1, 20\]'):
    plan_lib.RoundPlanner(task, 21)
  with pytest.raises(ValueError, match='leave no honest client'):
    plan_lib.RoundPlanner(task, 4, faults.FaultConfig(dropout_fraction=0.5,
                                                      byzantine_fraction=0.5))


def test_initial_model_depends_on_the_seed_only(task):
  a = plan_lib.initial_model_weights(task, 7).trainable
  b = plan_lib.initial_model_weights(task, 7).trainable
  c = plan_lib.initial_model_weights(task, 8).trainable
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))
