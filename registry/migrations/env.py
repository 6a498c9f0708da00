"""Alembic environment of the Poise job database.

Normally driven by `registry.db.run_migrations`, which builds the alembic `Config`
programmatically and passes an open connection (already inside a transaction) in
`config.attributes["connection"]`. For ad-hoc use of the alembic CLI, a URL in
`sqlalchemy.url` works too.
"""

from alembic import context
from sqlalchemy import create_engine, pool

from poise.registry.models import SCHEDULER_TABLE, Base

config = context.config
target_metadata = Base.metadata


def _not_the_scheduler_table(name, type_, parent_names) -> bool:
    """APScheduler creates and owns its job-store table; migrations leave it alone."""
    return not (type_ == "table" and name == SCHEDULER_TABLE)


def _configure(**kwargs) -> None:
    context.configure(target_metadata=target_metadata, compare_type=True, include_name=_not_the_scheduler_table,
                      **kwargs)


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url")
    _configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url is not None and url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_with(connection) -> None:
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            _run_with(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
