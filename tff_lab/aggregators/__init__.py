"""`tff.aggregators` factories: robust rules, compression, DP and secure aggregation, and the stack
that composes them from flags (`create_aggregator`)."""

from tff_lab.aggregators.stack import AGGREGATORS
from tff_lab.aggregators.stack import AggregationSettings
from tff_lab.aggregators.stack import COMPRESSIONS
from tff_lab.aggregators.stack import create_aggregator
from tff_lab.aggregators.stack import validate_aggregation_settings
