"""The drift-monitoring graph: collect → analyse → decide → act → compare → approve → promote → report."""
