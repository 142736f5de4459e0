"""Complexity measures, statistics, plots and reports."""
