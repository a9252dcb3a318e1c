"""`oidc_providers`: single sign-on through OpenID Connect providers, in Synapse's
names and shapes, so an operator moving from Synapse pastes the block unchanged.

Each entry becomes an `OidcProviderConfig`; anything wrong with an entry stops the
start with a one-line error naming the entry and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homeserver.config.model import Config
from homeserver.config.setting import ConfigError, Setting

if TYPE_CHECKING:
    from joserfc.jwk import Key

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "oidc_providers",
        list,
        [],
        "single sign-on through OpenID Connect providers, as Synapse's oidc_providers"
        " (see the README)",
        flag=False,
    ),
    Setting(
        "oidc_config",
        dict,
        None,
        "Synapse's older single-provider form of oidc_providers, used when it has enabled: true",
        flag=False,
        nullable=True,
    ),
    Setting(
        "sso.client_whitelist",
        tuple,
        (),
        "URL prefixes of clients that single sign-on sends straight back with a login"
        " token (as Synapse; public_baseurl is always one); others get a page asking the"
        " person to confirm, against phishing",
        flag=False,
    ),
    Setting(
        "sso.update_profile_information",
        bool,
        False,
        "at each single sign-on, set the user's display name from the provider's"
        " (display_name_template), as Synapse",
        flag=False,
    ),
)
CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none", "private_key_jwt")
PKCE_METHODS = ("auto", "always", "never")
USER_PROFILE_METHODS = ("auto", "userinfo_endpoint")
_IDP_ID = re.compile(r"[A-Za-z0-9._~-]{1,250}")
_IDP_BRAND = re.compile(r"[a-z][a-z0-9_.-]{0,254}")
_MXC = re.compile(r"mxc://[A-Za-z0-9.:\[\]-]+/[A-Za-z0-9_-]+")
_KNOWN_KEYS = frozenset(
    {
        "idp_id",
        "idp_name",
        "idp_icon",
        "idp_brand",
        "discover",
        "issuer",
        "client_id",
        "client_secret",
        "client_secret_path",
        "client_secret_jwt_key",
        "client_auth_method",
        "pkce_method",
        "id_token_signing_alg_values_supported",
        "scopes",
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "skip_verification",
        "backchannel_logout_enabled",
        "backchannel_logout_ignore_sub",
        "user_profile_method",
        "allow_existing_users",
        "user_mapping_provider",
        "attribute_requirements",
        "enable_registration",
        "additional_authorization_parameters",
    }
)
_MAPPING_KEYS = frozenset(
    {
        "subject_claim",
        "subject_template",
        "picture_claim",
        "localpart_template",
        "display_name_template",
        "email_template",
        "extra_attributes",
        "confirm_localpart",
    }
)


class OidcConfigError(ConfigError):
    """One provider entry is wrong; the message names the entry and the key."""


@dataclass(frozen=True)
class ClientSecretJwtKey:
    """A private key that signs the client's proof at the token endpoint."""

    key: str  # PEM
    jwt_header: dict[str, str]
    jwt_payload: dict[str, str]


@dataclass(frozen=True)
class AttributeRequirement:
    """A claim the provider must assert for the user to be let in: equal to `value`,
    or to one of `one_of` (a list claim passes when any of its items does)."""

    attribute: str
    value: str | None = None
    one_of: tuple[str, ...] = ()

    def met_by(self, claims: dict[str, Any]) -> bool:
        allowed = {self.value} if self.value is not None else set(self.one_of)
        found = claims.get(self.attribute)
        values = found if isinstance(found, list) else [found]
        return any(isinstance(v, str) and v in allowed for v in values)


@dataclass(frozen=True)
class UserMapping:
    """Synapse's Jinja mapping: templates over the claims (`user`), for the subject,
    the localpart and the display name."""

    subject_claim: str = "sub"
    subject_template: str | None = None
    localpart_template: str | None = None
    display_name_template: str | None = None
    confirm_localpart: bool = False


@dataclass(frozen=True)
class OidcProviderConfig:
    idp_id: str  # as Synapse: "oidc-<idp_id>", or "oidc"
    idp_name: str
    issuer: str
    client_id: str
    idp_icon: str | None = None
    idp_brand: str | None = None
    discover: bool = True
    client_secret: str | None = None
    client_secret_jwt_key: ClientSecretJwtKey | None = None
    client_auth_method: str = "client_secret_basic"
    pkce_method: str = "auto"
    id_token_signing_alg_values_supported: tuple[str, ...] | None = None
    scopes: tuple[str, ...] = ("openid",)
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    jwks_uri: str | None = None
    skip_verification: bool = False
    backchannel_logout_enabled: bool = False
    backchannel_logout_ignore_sub: bool = False
    user_profile_method: str = "auto"
    allow_existing_users: bool = False
    enable_registration: bool = True
    mapping: UserMapping = field(default_factory=UserMapping)
    attribute_requirements: tuple[AttributeRequirement, ...] = ()
    additional_authorization_parameters: dict[str, str] = field(default_factory=dict)


def _typed(entry: dict[str, Any], key: str, kind: type, where: str, default: Any = None) -> Any:
    value = entry.get(key, default)
    if value is None or isinstance(value, kind):
        if kind is not bool and isinstance(value, bool):
            raise OidcConfigError(f"{where}.{key} must be {kind.__name__}")
        return value
    raise OidcConfigError(f"{where}.{key} must be {kind.__name__}, got {value!r}")


def _strings(entry: dict[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise OidcConfigError(f"{where}.{key} must be a list of strings")
    return tuple(value)


def _read_file(path: str, where: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise OidcConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None


def _jwt_key(raw: Any, where: str) -> ClientSecretJwtKey | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise OidcConfigError(f"{where} must be a mapping")
    if ("key" in raw) == ("key_file" in raw):
        raise OidcConfigError(f"{where} needs one of key or key_file")
    key = raw["key"] if "key" in raw else _read_file(str(raw["key_file"]), where)
    header = raw.get("jwt_header")
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
        raise OidcConfigError(f"{where}.jwt_header needs an alg")
    payload = raw.get("jwt_payload") or {}
    if not isinstance(payload, dict):
        raise OidcConfigError(f"{where}.jwt_payload must be a mapping")
    return ClientSecretJwtKey(
        str(key),
        {str(k): str(v) for k, v in header.items()},
        {str(k): v for k, v in payload.items()},
    )


def _requirements(raw: Any, where: str) -> tuple[AttributeRequirement, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise OidcConfigError(f"{where} must be a list")
    found = []
    for i, item in enumerate(raw):
        here = f"{where}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("attribute"), str):
            raise OidcConfigError(f"{here} needs an attribute")
        value, one_of = item.get("value"), item.get("one_of")
        if (value is None) == (one_of is None):
            raise OidcConfigError(f"{here} needs one of value or one_of")
        if one_of is not None and not (
            isinstance(one_of, list) and all(isinstance(v, str) for v in one_of)
        ):
            raise OidcConfigError(f"{here}.one_of must be a list of strings")
        if value is not None and not isinstance(value, str):
            raise OidcConfigError(f"{here}.value must be a string")
        found.append(AttributeRequirement(item["attribute"], value, tuple(one_of or ())))
    return tuple(found)


def _mapping(raw: Any, where: str) -> UserMapping:
    if raw is None:
        return UserMapping()
    if not isinstance(raw, dict):
        raise OidcConfigError(f"{where} must be a mapping")
    module = raw.get("module")
    if module is not None and not str(module).endswith(".JinjaOidcMappingProvider"):
        raise OidcConfigError(f"{where}.module: only the Jinja mapping provider is supported")
    config = raw.get("config") or {}
    here = f"{where}.config"
    if not isinstance(config, dict):
        raise OidcConfigError(f"{here} must be a mapping")
    unknown = set(config) - _MAPPING_KEYS
    if unknown:
        raise OidcConfigError(f"{here}: unknown key {sorted(unknown)[0]!r}")
    return UserMapping(
        subject_claim=_typed(config, "subject_claim", str, here, "sub"),
        subject_template=_typed(config, "subject_template", str, here),
        localpart_template=_typed(config, "localpart_template", str, here),
        display_name_template=_typed(config, "display_name_template", str, here),
        confirm_localpart=_typed(config, "confirm_localpart", bool, here, False),
    )


def _secret(entry: dict[str, Any], where: str) -> str | None:
    secret = _typed(entry, "client_secret", str, where)
    path = _typed(entry, "client_secret_path", str, where)
    if path is not None:
        if secret is not None:
            raise OidcConfigError(f"{where}: client_secret and client_secret_path both set")
        secret = _read_file(path, f"{where}.client_secret_path").rstrip("\n")
    return secret


def _client_auth(entry: dict[str, Any], where: str, secret: str | None, jwt_key: Any) -> str:
    method = _typed(entry, "client_auth_method", str, where)
    if method is not None and method not in CLIENT_AUTH_METHODS:
        raise OidcConfigError(
            f"{where}.client_auth_method must be one of {', '.join(CLIENT_AUTH_METHODS)}"
        )
    if method == "private_key_jwt" and jwt_key is None:
        raise OidcConfigError(f"{where}: private_key_jwt needs client_secret_jwt_key")
    if secret is None and jwt_key is None:
        if method not in (None, "none"):
            raise OidcConfigError(f"{where}: no client_secret, so client_auth_method must be none")
        return "none"
    return method or "client_secret_basic"


def _endpoints(entry: dict[str, Any], where: str) -> dict[str, Any]:
    discover = _typed(entry, "discover", bool, where, True)
    found = {k: _typed(entry, k, str, where) for k in _ENDPOINT_KEYS}
    if not discover:
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if found[key] is None:
                raise OidcConfigError(f"{where}: discover is false, so {key} is needed")
    return {"discover": discover, **found}


_ENDPOINT_KEYS = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")


def _choice(entry: dict[str, Any], key: str, choices: tuple[str, ...], where: str) -> str:
    value = _typed(entry, key, str, where, choices[0])
    if value not in choices:
        raise OidcConfigError(f"{where}.{key} must be one of {', '.join(choices)}")
    return str(value)


def parse_provider(entry: Any, where: str) -> OidcProviderConfig:
    """One `oidc_providers` entry, checked as Synapse checks it."""
    if not isinstance(entry, dict):
        raise OidcConfigError(f"{where} must be a mapping")
    unknown = set(entry) - _KNOWN_KEYS
    if unknown:
        raise OidcConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    for key in ("issuer", "client_id"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise OidcConfigError(f"{where}.{key} is required")
    idp_id = _typed(entry, "idp_id", str, where, "oidc")
    if not _IDP_ID.fullmatch(idp_id):
        raise OidcConfigError(f"{where}.idp_id may hold only A-Z a-z 0-9 . _ ~ -")
    icon = _typed(entry, "idp_icon", str, where)
    if icon is not None and not _MXC.fullmatch(icon):
        raise OidcConfigError(f"{where}.idp_icon must be an mxc:// URI")
    brand = _typed(entry, "idp_brand", str, where)
    if brand is not None and not _IDP_BRAND.fullmatch(brand):
        raise OidcConfigError(f"{where}.idp_brand must match [a-z][a-z0-9_.-]*")
    secret = _secret(entry, where)
    jwt_key = _jwt_key(entry.get("client_secret_jwt_key"), f"{where}.client_secret_jwt_key")
    scopes = _strings(entry, "scopes", where) or ("openid",)
    extra = entry.get("additional_authorization_parameters") or {}
    if not isinstance(extra, dict):
        raise OidcConfigError(f"{where}.additional_authorization_parameters must be a mapping")
    return OidcProviderConfig(
        idp_id=idp_id if idp_id == "oidc" else f"oidc-{idp_id}",
        idp_name=_typed(entry, "idp_name", str, where, "OIDC"),
        issuer=entry["issuer"],
        client_id=entry["client_id"],
        idp_icon=icon,
        idp_brand=brand,
        client_secret=secret,
        client_secret_jwt_key=jwt_key,
        client_auth_method=_client_auth(entry, where, secret, jwt_key),
        pkce_method=_choice(entry, "pkce_method", PKCE_METHODS, where),
        id_token_signing_alg_values_supported=_strings(
            entry, "id_token_signing_alg_values_supported", where
        ),
        scopes=scopes,
        skip_verification=_typed(entry, "skip_verification", bool, where, False),
        backchannel_logout_enabled=_typed(entry, "backchannel_logout_enabled", bool, where, False),
        backchannel_logout_ignore_sub=_typed(
            entry, "backchannel_logout_ignore_sub", bool, where, False
        ),
        user_profile_method=_choice(entry, "user_profile_method", USER_PROFILE_METHODS, where),
        allow_existing_users=_typed(entry, "allow_existing_users", bool, where, False),
        enable_registration=_typed(entry, "enable_registration", bool, where, True),
        mapping=_mapping(entry.get("user_mapping_provider"), f"{where}.user_mapping_provider"),
        attribute_requirements=_requirements(
            entry.get("attribute_requirements"), f"{where}.attribute_requirements"
        ),
        additional_authorization_parameters={str(k): str(v) for k, v in extra.items()},
        **_endpoints(entry, where),
    )


def parse_providers(raw: Any) -> tuple[OidcProviderConfig, ...]:
    """The whole `oidc_providers` list (null or absent: none); ids must be unique."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise OidcConfigError("oidc_providers must be a list")
    providers = tuple(parse_provider(p, f"oidc_providers[{i}]") for i, p in enumerate(raw))
    seen: set[str] = set()
    for provider in providers:
        if provider.idp_id in seen:
            raise OidcConfigError(f"oidc_providers: idp_id {provider.idp_id!r} is used twice")
        seen.add(provider.idp_id)
    return providers


_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def _check_usable(provider: OidcProviderConfig, where: str) -> None:
    """What can only be found wrong by trying: templates compile, the key loads.
    (jinja2 is imported here and in `load_private_key` joserfc, with cryptography:
    about 10 MiB that a server without single sign-on never loads.)"""
    from jinja2 import TemplateError
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment()
    mapping = provider.mapping
    for name in ("subject_template", "localpart_template", "display_name_template"):
        source = getattr(mapping, name)
        try:
            if source is not None:
                env.parse(source)
        except TemplateError as exc:
            raise OidcConfigError(f"{where}.user_mapping_provider.config.{name}: {exc}") from None
    key = provider.client_secret_jwt_key
    if key is not None:
        try:
            load_private_key(key.key, key.jwt_header["alg"])
        except ValueError as exc:
            raise OidcConfigError(f"{where}.client_secret_jwt_key: {exc}") from None


def load_private_key(pem: str, alg: str) -> Key:
    """The client's signing key (PEM) for `alg`; ValueError when it does not fit."""
    from joserfc.errors import JoseError
    from joserfc.jwk import import_key

    kind = _KEY_TYPES.get(alg[:2])
    if kind is None:
        raise ValueError(f"unsupported jwt_header alg {alg}")
    try:
        return import_key(pem, kind)  # type: ignore[call-overload]
    except (JoseError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot load the key for {alg}: {exc}") from None


def providers(config: Config) -> tuple[OidcProviderConfig, ...]:
    """The configured providers (checked when the config was loaded): the list, and
    the older single `oidc_config` block when enabled, as Synapse reads both."""
    entries = list(config.oidc_providers)
    legacy = config.oidc_config
    if legacy and legacy.get("enabled", False):
        entries.append({k: v for k, v in legacy.items() if k != "enabled"})
    return parse_providers(entries)


def validate(config: Config) -> None:
    for i, provider in enumerate(providers(config)):
        _check_usable(provider, f"oidc_providers[{i}]")
