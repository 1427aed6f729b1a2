"""Evaluation: federated (per-client distribution) and centralised."""

from tff_lab.evaluation.centralized import evaluate_centralized
from tff_lab.evaluation.federated import build_federated_evaluation
from tff_lab.evaluation.federated import evaluate_federated
from tff_lab.evaluation.federated import summarize
from tff_lab.evaluation.per_silo import evaluate_per_silo
