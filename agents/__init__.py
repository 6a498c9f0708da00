"""Poise agents: one module per agent (data engineering, AutoML, drift), a package for deployment.

Each agent is plain functions over pandas tables and JSON-able dicts, so the
LangGraph nodes in `pipelines/` stay thin and every agent can be tested alone.
"""

import os

# AutoGluon/LightGBM spin-wait on idle OpenMP threads; on a 2-core machine that
# turned a 0.7 s fit into 40 s under contention. It must be set before import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
