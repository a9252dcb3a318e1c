"""`oidc_providers` in Synapse's shape: read as Synapse reads it, and any mistake
stops the start with one line naming the entry and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import RSAKey

from homeserver.config import ConfigError, load_config
from homeserver.config.oidc import providers

KEYCLOAK = {
    "idp_id": "keycloak",
    "idp_name": "Our Keycloak",
    "idp_icon": "mxc://example.org/abcdef",
    "idp_brand": "keycloak",
    "issuer": "https://sso.example.org/realms/community",
    "client_id": "matrix",
    "client_secret": "s3cret",
    "scopes": ["openid", "profile"],
    "attribute_requirements": [{"attribute": "groups", "value": "matrix"}],
    "user_mapping_provider": {
        "config": {
            "localpart_template": "{{ user.preferred_username }}",
            "display_name_template": "{{ user.name }}",
        }
    },
}


def load(tmp_path: Path, *entries: Any) -> Any:
    return load_config(tmp_path, {"oidc_providers": list(entries)}, {}, {})


def test_synapse_block_is_read_with_synapse_defaults(tmp_path: Path) -> None:
    (kc, legacy) = providers(load(tmp_path, KEYCLOAK, {"issuer": "https://a", "client_id": "c"}))
    assert kc.idp_id == "oidc-keycloak"
    assert kc.client_auth_method == "client_secret_basic"
    assert kc.pkce_method == "auto"
    assert kc.mapping.localpart_template == "{{ user.preferred_username }}"
    assert kc.attribute_requirements[0].met_by({"groups": ["staff", "matrix"]})
    assert not kc.attribute_requirements[0].met_by({"groups": ["staff"]})
    # Synapse keeps "oidc" unprefixed, and a provider without a secret is a public client.
    assert (legacy.idp_id, legacy.idp_name, legacy.client_auth_method) == ("oidc", "OIDC", "none")


def test_secret_file_and_private_key_jwt(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    key = RSAKey.generate_key(2048, private=True).as_pem(private=True).decode()
    a, b = providers(
        load(
            tmp_path,
            {**KEYCLOAK, "client_secret": None, "client_secret_path": str(secret)},
            {
                **KEYCLOAK,
                "idp_id": "signed",
                "client_secret": None,
                "client_auth_method": "private_key_jwt",
                "client_secret_jwt_key": {"key": key, "jwt_header": {"alg": "RS256"}},
            },
        )
    )
    assert a.client_secret == "from-a-file"
    assert b.client_auth_method == "private_key_jwt"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"issuer": None}, r"oidc_providers\[0\]\.issuer is required"),
        ({"idp_id": "no spaces"}, r"idp_id may hold only"),
        ({"idp_icon": "https://example.org/i.png"}, r"idp_icon must be an mxc:// URI"),
        ({"client_auth_method": "magic"}, r"client_auth_method must be one of"),
        ({"pkce_method": "sometimes"}, r"pkce_method must be one of"),
        ({"client_secret": None, "client_auth_method": "client_secret_post"}, r"must be none"),
        ({"client_auth_method": "private_key_jwt"}, r"private_key_jwt needs client_secret_jwt_key"),
        (
            {"client_secret_jwt_key": {"key": "not a key", "jwt_header": {"alg": "ES256"}}},
            r"client_secret_jwt_key: cannot load the key",
        ),
        (
            {"user_mapping_provider": {"config": {"localpart_template": "{{ user.x "}}},
            r"localpart_template: unexpected end of template",
        ),
        ({"attribute_requirements": [{"attribute": "groups"}]}, r"needs one of value or one_of"),
        ({"discover": False}, r"discover is false, so authorization_endpoint is needed"),
        ({"clent_id": "typo"}, r"unknown key 'clent_id'"),
    ],
)
def test_misconfigured_provider_is_a_one_line_error(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    entry = {k: v for k, v in {**KEYCLOAK, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=message) as info:
        load(tmp_path, entry)
    assert "\n" not in str(info.value)


def test_two_providers_may_not_share_an_id(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="idp_id 'oidc-keycloak' is used twice"):
        load(tmp_path, KEYCLOAK, KEYCLOAK)


def test_older_single_provider_block_is_read_when_enabled(tmp_path: Path) -> None:
    block = {"issuer": "https://a", "client_id": "c", "client_secret": "s"}
    config = load_config(tmp_path, {"oidc_config": {**block, "enabled": True}}, {}, {})
    assert [p.idp_id for p in providers(config)] == ["oidc"]
    config = load_config(tmp_path, {"oidc_config": block}, {}, {})
    assert providers(config) == ()
