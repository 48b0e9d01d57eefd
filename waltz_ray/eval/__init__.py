"""Evaluation: ASR, ORR, FTR, feedback label quality and latency over episodes; baselines and reports."""
