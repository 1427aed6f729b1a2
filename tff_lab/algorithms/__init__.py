"""Federated algorithms as `tff.learning` learning processes."""

from tff_lab.algorithms.fedavg import build_fedavg
from tff_lab.algorithms.fedprox import build_fedprox
from tff_lab.algorithms.fedsgd import build_fedsgd
from tff_lab.algorithms.optimizers import create_optimizer
from tff_lab.algorithms.optimizers import optimizer_hparams
from tff_lab.algorithms.optimizers import optimizer_names
from tff_lab.algorithms.registry import ALGORITHMS
from tff_lab.algorithms.registry import check_algorithm
from tff_lab.algorithms.registry import create_learning_process
from tff_lab.algorithms.spec import AlgorithmSpec
from tff_lab.algorithms.spec import register
