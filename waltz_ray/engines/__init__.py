"""Adapters behind small interfaces: generators, judges, learners and weight sync (heavy imports live here)."""
