"""`tff.aggregators` factories: robust rules, compression and DP, and the stack that composes them
from flags (`create_aggregator`). Secure aggregation, which cannot run inside a TFF computation,
is a round runner: `tff_lab.algorithms.secure_rounds`. Aggregators of your own:
`register(name, factory_builder)` (registry.py)."""

from tff_lab.aggregators.registry import register

from tff_lab.aggregators.stack import AGGREGATORS
from tff_lab.aggregators.stack import AggregationSettings
from tff_lab.aggregators.stack import COMPRESSIONS
from tff_lab.aggregators.stack import create_aggregator
from tff_lab.aggregators.stack import validate_aggregation_settings
from tff_lab.aggregators.stack import without_secure_aggregation
