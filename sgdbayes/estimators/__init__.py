"""Estimator plug-ins (filled in stage 2)."""
