"""Error tree of the shared core.

WhkError                      base; ``hint`` tells the operator what to do
├── SettingsError             a WHK_* variable is unknown or has a bad value
├── DatabaseUnavailable       the DSN points nowhere / the server refuses us
├── SchemaVersionMismatch     the database schema is older or newer than this code
├── PostgresServerError       the private PostgreSQL server could not be prepared or started
├── PrivilegedDatabaseRole    a process is connected as a superuser or the owner of WHK's tables
└── MigrationError            a migration cannot be planned or applied
    ├── MigrationParseError   a file does not parse (file and line in the message)
    ├── ChecksumMismatch      an applied file was edited afterwards
    └── MigrationLayoutError  names or numbering of the files are wrong
"""

from __future__ import annotations


class WhkError(Exception):
    """Base of every operational error; ``hint`` is one sentence of advice."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class SettingsError(WhkError):
    """A WHK_* environment variable is unknown or carries an invalid value."""


class DatabaseUnavailable(WhkError):
    """The database cannot be reached with the configured DSN."""


class SchemaVersionMismatch(WhkError):
    """The applied schema version differs from the one this code was written for."""

    def __init__(self, *, database: int, code: int) -> None:
        older = database < code
        super().__init__(
            f"database schema is at version {database}, this code needs version {code}",
            hint="run `whk db migrate`" if older else "deploy the code that matches the newer schema",
        )
        self.database = database
        self.code = code


class PostgresServerError(WhkError):
    """The private PostgreSQL server could not be prepared or started."""


class PrivilegedDatabaseRole(WhkError):
    """A process (API, dispatcher) is connected as a superuser or as the owner of WHK's tables
    (refused in production unless WHK_ALLOW_PRIVILEGED_DB_ROLE=true)."""


class MigrationError(WhkError):
    """A migration cannot be planned or applied."""


class MigrationParseError(MigrationError):
    """A migration file has a syntax error."""


class ChecksumMismatch(MigrationError):
    """An already applied migration file was changed."""


class MigrationLayoutError(MigrationError):
    """Migration files are misnamed, duplicated or leave a gap."""
