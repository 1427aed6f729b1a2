"""An experiment's settings and their validation.

`ExperimentConfig` is what the experiment binary builds from flags and what a notebook builds by
hand. It is made of the typed sections of `tff_lab.training.sections` (task, algorithm, training,
evaluation, faults, aggregation, simulation, output), which declare each setting once, with its
default and its flag's help, and validate themselves. `validate()` catches every bad value that
needs no data, section by section and then across sections, and `validate_against_task()` the
ones that need the task's client count; both run before any TFF tracing, and each problem is one
`ConfigError` line naming the setting.

The experiment directory's I/O (config.json and what may change on resuming, summary.json,
history.jsonl, default directory names) is `tff_lab.training.experiment_dir`; its
`prepare_experiment_dir`, `check_saved_plugins` and `RESUMABLE_KEYS` are re-exported here.
"""

import collections
import dataclasses
from typing import Any

from tff_lab.aggregators import registry as aggregators_registry
from tff_lab.algorithms import registry as algorithms_registry
from tff_lab import plugins as plugins_lib
from tff_lab.simulation import backends
from tff_lab.training import sections
from tff_lab.training.sections import ConfigError  # pylint: disable=unused-import  (re-exported)
from tff_lab import faults as faults_lib

# After ConfigError: experiment_dir imports this module for it. Re-exported for their callers.
# pylint: disable=g-import-not-at-top,wrong-import-position,unused-import
from tff_lab.training.experiment_dir import RESUMABLE_KEYS
from tff_lab.training.experiment_dir import _comparable
from tff_lab.training.experiment_dir import check_saved_plugins
from tff_lab.training.experiment_dir import prepare_experiment_dir
# pylint: enable=g-import-not-at-top,wrong-import-position,unused-import


@dataclasses.dataclass
class ExperimentConfig(sections.OutputSection, sections.SimulationSection,
                       sections.AggregationSection, sections.FaultSection,
                       sections.EvaluationSection, sections.TrainingSection,
                       sections.AlgorithmSection, sections.TaskSection):
  """Settings of one federated training run: the fields of every section of
  `tff_lab.training.sections`, one flat name per setting.

  Each field is documented where its section declares it (its `help`, which is also its flag's
  help: `tff-lab-run --help` lists them by section). Build one by keyword, as a notebook does
  (`ExperimentConfig(task='mnist5k', rounds=20)`); `section(sections.FaultSection)` gives one
  section on its own.

  Attributes: see `tff_lab.training.sections` (task, task_options; algorithm, algorithm_hparams,
    client/server optimizer, rate, hyperparameters and LR schedule; rounds, clients_per_round,
    client_sampling, client_epochs, client_batch_size, client_max_elements,
    client_shuffle_buffer, seed; eval_every, finetune_epochs, local_baseline_epochs; the fault
    fractions, attack, attack_scale; aggregation, dp_delta, dp_metrics; simulation, asynchrony,
    workers, worker_timeout, max_concurrent_clients; root_output_dir, experiment_name,
    checkpoint_every, overwrite, progress, plugins, model_aggregator).
  """

  def section(self, section_type: type) -> Any:
    """The settings of one section (a `tff_lab.training.sections` class) of this config."""
    return section_type(**{f.name: getattr(self, f.name)
                           for f in dataclasses.fields(section_type)})

  def aggregation_settings(self) -> dict:
    """Keyword arguments of `tff_lab.aggregators.create_aggregator` for this experiment."""
    return dict(self.aggregation, clients_per_round=self.clients_per_round,
                num_dropped=self.faults.counts(self.clients_per_round)[1])

  def to_dict(self) -> 'collections.OrderedDict[str, Any]':
    return collections.OrderedDict(dataclasses.asdict(self))

  def validate(self) -> None:
    """Checks every setting that needs no data. Raises ConfigError naming the first problem.

    The plugins first (what they register is what the other settings name), then each section's
    own check in `sections.SECTIONS` order, then what spans sections: a registered aggregator of
    the kind the algorithm needs, and what the backend and the algorithm on it can run.
    """
    sections.as_config_error(lambda: plugins_lib.load(self.plugins))
    check_saved_plugins(self)
    self.check_task()
    self.check_algorithm()
    self.check_training()
    self.check_evaluation()
    self.check_faults(self.clients_per_round)
    self.check_aggregation(self.clients_per_round, self.faults.counts(self.clients_per_round)[1])
    self.check_simulation()
    self.check_output()
    self._check_registered_aggregator(algorithms_registry.get(self.algorithm))
    # What the backend this config selects, and the algorithm on it, cannot run (with
    # --simulation=auto: that some backend can).
    sections.as_config_error(lambda: backends.check(self))

  def _check_registered_aggregator(self, spec) -> None:
    """Builds a registered aggregator's factory (no tracing) to check its options and that it is
    of the kind the algorithm needs (weighted or not), before anything is written."""
    name = self.aggregation.get('aggregator', 'mean')
    if not aggregators_registry.is_registered(name):
      return
    if spec.build_runner is not None:  # as loop.check_model_aggregator: its own rounds
      raise ConfigError(f'--algorithm={self.algorithm} aggregates with its own rounds and cannot '
                        f'run --aggregator={name}')
    from tff_lab.training import loop  # pylint: disable=g-import-not-at-top  (loop imports us)
    try:
      aggregators_registry.build(name, loop.needs_weighted_aggregator(self),
                                 self.aggregation.get('aggregator_options'))
    except ValueError as e:
      raise ConfigError(f'{e} (--algorithm={self.algorithm})') from None

  def validate_against_task(self, num_train_clients: int, prediction_kind: str) -> None:
    """Checks the settings that depend on the task (still before any tracing)."""
    sections.require(self.clients_per_round <= num_train_clients,
                     f'clients_per_round={self.clients_per_round} exceeds the {num_train_clients} '
                     f'training clients of task {self.task!r}')
    sections.require(not (self.byzantine_fraction > 0 and self.attack == 'label_flip')
                     or prediction_kind in faults_lib.LABEL_FLIP_KINDS,
                     f'--attack=label_flip is defined for {list(faults_lib.LABEL_FLIP_KINDS)} '
                     f'labels; task {self.task!r} predicts {prediction_kind!r}')

