"""Poise registry: the SQLAlchemy job database and the MLflow tracking/registry layer."""
