"""Which database errors the dispatcher treats as one webhook's fault (dispatcher/faults.py)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from dispatcher.engine import TRANSIENT_DB_ERRORS
from dispatcher.faults import describe, is_webhook_fault
from whk.urlpolicy import policy_fingerprint


@pytest.mark.parametrize(
    ("sqlstate", "about_a_webhook"),
    [
        ("22003", True),  # numeric value out of range (the 5e-324 underflow, 1e308 overflow)
        ("22012", True),  # division by zero
        ("22P02", True),  # invalid text representation
        ("23514", True),  # check violation
        ("P0001", True),  # RAISE in PL/pgSQL
        ("54001", True),  # statement too complex: an OperationalError, but data-driven
        ("XX001", True),  # data corrupted
        ("08006", False),  # connection failure
        ("57P01", False),  # admin shutdown (server restart)
        ("57014", False),  # statement timeout
        ("40P01", False),  # deadlock
        ("42883", False),  # undefined function: a deployment problem
    ],
)
def test_webhook_faults_by_sqlstate(sqlstate: str, about_a_webhook: bool):
    exc = errors.lookup(sqlstate)("boom")
    assert is_webhook_fault(exc) is about_a_webhook


def test_errors_without_sqlstate_are_not_a_webhooks_fault():
    assert not is_webhook_fault(psycopg.OperationalError("connection lost"))
    assert not is_webhook_fault(ValueError("bug"))
    # A lost connection still goes the transient way.
    assert isinstance(psycopg.OperationalError("x"), TRANSIENT_DB_ERRORS)


def test_describe_names_the_sqlstate_and_the_first_line():
    exc = errors.lookup("22003")("integer out of range\nCONTEXT: PL/pgSQL function")
    assert describe(exc) == "22003 NumericValueOutOfRange: integer out of range"
    assert describe(KeyError("x")) == "KeyError: 'x'"


def test_policy_fingerprint_names_the_exempt_set():
    import ipaddress

    a = ipaddress.ip_network("127.0.0.0/8")
    b = ipaddress.ip_network("::1/128")
    assert policy_fingerprint(()) == "none"
    assert policy_fingerprint((a, b)) == policy_fingerprint((b, a, a)) != policy_fingerprint((a,))
    assert policy_fingerprint((a,)).startswith("cidrs-") and len(policy_fingerprint((a,))) == 18
