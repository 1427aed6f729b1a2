"""The training loop: configuration, rounds, checkpoint/resume and metric release."""

from tff_lab.training.config import ConfigError
from tff_lab.training.config import ExperimentConfig
from tff_lab.training.loop import NonFiniteLossError
from tff_lab.training.loop import run_experiment
