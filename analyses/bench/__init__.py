"""Benchmark scoring on stored responses: rule-based answer extraction per benchmark and accuracy summaries."""
