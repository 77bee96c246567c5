"""Settings: one frozen object from WHK_* variables; bad values and unknown names are refused clearly."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from tests.support.pg import REPO
from whk.errors import SettingsError
from whk.settings import configuration_markdown, known_variables, load_settings


def test_defaults_are_valid_and_frozen():
    s = load_settings({})
    assert s.core.database_url is None
    assert s.dispatcher.lease_seconds >= 3 * s.dispatcher.attempt_timeout
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.core.debug = True  # type: ignore[misc]


def test_values_are_parsed_by_type():
    s = load_settings(
        {
            "WHK_DATABASE_URL": "postgresql://u@h/d",
            "WHK_DEBUG": "yes",
            "WHK_API_PORT": "9000",
            "WHK_POLL_INTERVAL": "0.25",
            "WHK_DATA_DIR": "/srv/whk",
            "WHK_ALLOW_PRIVATE_CIDRS": "127.0.0.1/32, ::1/128",
        }
    )
    assert s.core.debug is True
    assert s.api.port == 9000
    assert s.dispatcher.poll_interval == 0.25
    assert s.core.data_dir == Path("/srv/whk")
    assert s.core.allow_private_cidrs == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WHK_API_PORT": "eighty"}, "WHK_API_PORT='eighty' is not valid"),
        ({"WHK_DEBUG": "maybe"}, "WHK_DEBUG='maybe' is not valid"),
        ({"WHK_ENV": "staging"}, "must be one of development, production"),
        ({"WHK_POLL_INTERVAL": "-1"}, "must be greater than 0"),
        ({"WHK_ALLOW_PRIVATE_CIDRS": "not-a-net"}, "WHK_ALLOW_PRIVATE_CIDRS='not-a-net' is not valid"),
        ({"WHK_DATABSE_URL": "x"}, "unknown setting WHK_DATABSE_URL"),
        ({"WHK_LEASE_SECONDS": "10", "WHK_ATTEMPT_TIMEOUT": "5"}, "shorter than 3 x WHK_ATTEMPT_TIMEOUT"),
        ({"WHK_DISPATCHER_HOST_CONCURRENCY": "0"}, "must be greater than 0"),
        (
            {"WHK_DISPATCHER_CONCURRENCY": "8", "WHK_DISPATCHER_HOST_CONCURRENCY": "9"},
            "WHK_DISPATCHER_HOST_CONCURRENCY=9 is larger than WHK_DISPATCHER_CONCURRENCY=8",
        ),
        (
            {"WHK_ENV": "production", "WHK_ALLOW_PRIVATE_CIDRS": "127.0.0.1/32"},
            "WHK_ALLOW_PRIVATE_CIDRS is set while WHK_ENV=production",
        ),
    ],
)
def test_bad_settings_raise_one_clear_error(env: dict[str, str], message: str):
    with pytest.raises(SettingsError, match=message) as err:
        load_settings(env)
    assert err.value.hint


def test_configuration_doc_lists_every_variable():
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert configuration_markdown() in doc, "regenerate the table: .venv/bin/whk config"
    for name in known_variables():
        assert f"`{name}`" in doc


@pytest.mark.parametrize(
    ("env", "per_host"),
    [
        ({}, 32),
        ({"WHK_DISPATCHER_CONCURRENCY": "6"}, 4),
        ({"WHK_DISPATCHER_CONCURRENCY": "2"}, 2),
        ({"WHK_DISPATCHER_HOST_CONCURRENCY": "64"}, 64),
        ({"WHK_DISPATCHER_CONCURRENCY": "10", "WHK_DISPATCHER_HOST_CONCURRENCY": "3"}, 3),
    ],
)
def test_connections_per_host_default_to_half_the_pool(env: dict[str, str], per_host: int) -> None:
    assert load_settings(env).dispatcher.connections_per_host == per_host


LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # The development default comes from the settings, so every process of a deployment agrees
        # (a dispatcher started by hand included), not from the Makefile's `up` target.
        ({}, LOOPBACK),
        ({"WHK_ENV": "development"}, LOOPBACK),
        ({"WHK_ENV": "development", "WHK_ALLOW_PRIVATE_CIDRS": ""}, ()),
        ({"WHK_ALLOW_PRIVATE_CIDRS": "10.0.0.0/8"}, (ipaddress.ip_network("10.0.0.0/8"),)),
        ({"WHK_ENV": "production"}, ()),
        ({"WHK_ENV": "production", "WHK_ALLOW_PRIVATE_CIDRS": ""}, ()),
    ],
)
def test_loopback_is_exempt_by_default_in_development_only(env: dict[str, str], expected: tuple[object, ...]):
    assert load_settings(env).core.allow_private_cidrs == expected


def test_the_makefile_sets_no_ssrf_policy_of_its_own():
    assert "WHK_ALLOW_PRIVATE_CIDRS" not in (REPO / "Makefile").read_text()
