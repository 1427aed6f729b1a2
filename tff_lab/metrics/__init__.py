"""Metrics: accuracy definitions, metric writers (CSV, TensorBoard, summary) and plots."""
