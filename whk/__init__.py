"""WHK shared core: settings, database access, SQL loading, migrations and the CLI."""

__version__ = "0.1.0"
