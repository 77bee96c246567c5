import time

import pytest

from api.jwtauth import JwtRejected, JwtVerifier
from tests.support import jwt_keys as jk
from whk.errors import SettingsError
from whk.settings import load_settings


def hs_verifier() -> JwtVerifier:
    v = JwtVerifier.from_settings(
        load_settings({"WHK_JWT_SECRET": jk.HS_SECRET, "WHK_JWT_ISSUER": jk.ISSUER, "WHK_JWT_LEEWAY": "0"})
    )
    assert v is not None
    return v


@pytest.fixture(scope="module")
def rsa_keys():
    return jk.rsa_pair()


@pytest.fixture
def rs_verifier(rsa_keys, tmp_path):
    path = jk.write_public(tmp_path, rsa_keys[1])
    v = JwtVerifier.from_settings(
        load_settings(
            {
                "WHK_JWT_ALGORITHM": "RS256",
                "WHK_JWT_PUBLIC_KEY_FILE": str(path),
                "WHK_JWT_ISSUER": jk.ISSUER,
                "WHK_JWT_LEEWAY": "0",
            }
        )
    )
    assert v is not None
    return v


def test_valid_consumer_token():
    c = hs_verifier().verify(jk.hs_token(whk_consumer=7, scope="webhooks:read deliveries:*"))
    assert (c.subject, c.consumer_id, c.admin) == ("alice", 7, False)
    assert c.scopes == {"webhooks:read", "deliveries:*"}


def test_valid_admin_token():
    c = hs_verifier().verify(jk.hs_token(scope="whk:admin"))
    assert c.admin
    assert c.consumer_id is None


def test_admin_scope_with_consumer_is_a_tenant_token():
    c = hs_verifier().verify(jk.hs_token(scope="whk:admin", whk_consumer="3"))
    assert not c.admin
    assert c.consumer_id == 3


now = int(time.time())

MATRIX = {
    "expired": jk.hs_token(whk_consumer=1, exp=now - 60),
    "not yet valid": jk.hs_token(whk_consumer=1, nbf=now + 600),
    "wrong audience": jk.hs_token(whk_consumer=1, aud="someone-else"),
    "wrong issuer": jk.hs_token(whk_consumer=1, iss="https://evil.test"),
    "alg none": jk.none_token(whk_consumer=1),
    "missing sub": jk.hs_token(whk_consumer=1, sub=None),
    "empty sub": jk.hs_token(whk_consumer=1, sub="  "),
    "missing exp": jk.hs_token(whk_consumer=1, exp=None),
    "missing aud": jk.hs_token(whk_consumer=1, aud=None),
    "missing iss": jk.hs_token(whk_consumer=1, iss=None),
    "tampered": jk.tamper(jk.hs_token(whk_consumer=1)),
    "wrong secret": jk.hs_forged_with(b"another-secret-another-secret-another", whk_consumer=1),
    "no tenant, no admin": jk.hs_token(),
    "bad consumer claim": jk.hs_token(whk_consumer="1; DROP TABLE x"),
    "garbage": "not.a.jwt",
}


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_hs_matrix_rejected(case):
    with pytest.raises(JwtRejected):
        hs_verifier().verify(MATRIX[case])


def test_rs_token_refused_by_hs_verifier(rsa_keys):
    with pytest.raises(JwtRejected, match="RS256"):
        hs_verifier().verify(jk.rs_token(rsa_keys[0], whk_consumer=1))


def test_rs_verifier_accepts_rs(rs_verifier, rsa_keys):
    assert rs_verifier.verify(jk.rs_token(rsa_keys[0], whk_consumer=2)).consumer_id == 2


def test_algorithm_swap_hs_signed_with_public_key_refused(rs_verifier, rsa_keys):
    forged = jk.hs_forged_with(rsa_keys[1], whk_consumer=2, scope="whk:admin")
    with pytest.raises(JwtRejected, match="HS256"):
        rs_verifier.verify(forged)


def test_rs_signed_by_another_key_refused(rs_verifier):
    other_private, _ = jk.rsa_pair()
    with pytest.raises(JwtRejected):
        rs_verifier.verify(jk.rs_token(other_private, whk_consumer=2))


def test_jwt_disabled_without_keys():
    assert JwtVerifier.from_settings(load_settings({})) is None


@pytest.mark.parametrize(
    "env",
    [
        {"WHK_JWT_SECRET": "short", "WHK_JWT_ISSUER": "x"},
        {"WHK_JWT_SECRET": jk.HS_SECRET},
        {"WHK_JWT_ALGORITHM": "RS256", "WHK_JWT_SECRET": jk.HS_SECRET, "WHK_JWT_ISSUER": "x"},
        {"WHK_JWT_ALGORITHM": "RS256", "WHK_JWT_PUBLIC_KEY_FILE": "/nonexistent.pem", "WHK_JWT_ISSUER": "x"},
    ],
)
def test_misconfiguration_refused(env):
    with pytest.raises(SettingsError):
        JwtVerifier.from_settings(load_settings(env))
