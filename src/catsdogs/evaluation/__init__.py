"""Measuring a trained model: metrics (numbers only), thresholds chosen on validation, run evaluation, comparison."""
