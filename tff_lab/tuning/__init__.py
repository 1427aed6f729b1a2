"""Hyperparameter search over tff-lab-run experiments on Optuna (`tff-lab-tune`; see study.py)."""

from tff_lab.tuning.study import Param
from tff_lab.tuning.study import StudyResult
from tff_lab.tuning.study import StudySpec
from tff_lab.tuning.study import TuneError
from tff_lab.tuning.study import parse_spec
from tff_lab.tuning.study import run_study
