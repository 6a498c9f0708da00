"""The training graph: load → profile → prepare → train → evaluate → gate → register → report."""
