"""One OpenID Connect provider as a client sees it: discovery, the authorization
URL (state, nonce, PKCE), the code exchange with the configured client
authentication, and the id token checked by authlib (signature against the
provider's JWKS, issuer, audience, expiry, nonce).

Network trouble with the provider is `ProviderUnavailable` (the user gets a page
saying so); an answer that fails a check is `LoginRefused` (with why).
"""

from __future__ import annotations

import base64
import time
from typing import Any
from urllib.parse import quote, urlencode, urlparse

import aiohttp
from authlib.common.security import generate_token
from authlib.oauth2.rfc7523 import private_key_jwt_sign
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import Key, KeySet
from joserfc.jws import JWSRegistry
from joserfc.jwt import JWTClaimsRegistry

from homeserver.config.oidc import OidcProviderConfig, load_private_key
from homeserver.services.sso.provider_errors import LoginRefused, ProviderUnavailable

DISCOVERY_PATH = "/.well-known/openid-configuration"
METADATA_LIFETIME_S = 3600.0
HTTP_TIMEOUT_S = 10.0
# Clock skew allowed between us and the provider when checking the token's times.
ID_TOKEN_LEEWAY_S = 60
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


def _joined(issuer: str, path: str) -> str:
    return issuer.rstrip("/") + path


class OidcProvider:
    """A configured provider; its metadata and keys are fetched when first needed
    and kept for an hour (keys again at once when a token names an unknown one)."""

    def __init__(self, config: OidcProviderConfig) -> None:
        self.config = config
        self._metadata: dict[str, Any] | None = None
        self._metadata_ts = 0.0
        self._jwks: KeySet | None = None
        self._session: aiohttp.ClientSession | None = None
        self._client_key: Key | None = None
        if config.client_secret_jwt_key is not None:
            key = config.client_secret_jwt_key
            self._client_key = load_private_key(key.key, key.jwt_header["alg"])

    @property
    def idp_id(self) -> str:
        return self.config.idp_id

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _get_json(self, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            async with self._http().get(url, **kwargs) as resp:
                if resp.status != 200:
                    raise ProviderUnavailable(f"{url} answered {resp.status}")
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ProviderUnavailable(f"{url}: {exc or type(exc).__name__}") from None
        if not isinstance(body, dict):
            raise ProviderUnavailable(f"{url} did not answer a JSON object")
        return body

    async def metadata(self) -> dict[str, Any]:
        """The provider's endpoints: discovered (unless `discover: false`), with the
        configured endpoints taking precedence."""
        config = self.config
        if (
            self._metadata is not None
            and time.monotonic() - self._metadata_ts < METADATA_LIFETIME_S
        ):
            return self._metadata
        found: dict[str, Any] = {"issuer": config.issuer}
        if config.discover:
            found = await self._get_json(_joined(config.issuer, DISCOVERY_PATH))
        for key in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
            value = getattr(config, key)
            if value is not None:
                found[key] = value
        if not config.skip_verification:
            self._verify_metadata(found)
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(found.get(key), str):
                raise ProviderUnavailable(f"the provider's metadata has no {key}")
        self._metadata, self._metadata_ts = found, time.monotonic()
        return found

    def _verify_metadata(self, metadata: dict[str, Any]) -> None:
        """OpenID Connect Discovery's checks: same issuer, endpoints over HTTPS."""
        if metadata.get("issuer") != self.config.issuer:
            raise ProviderUnavailable(
                f"the provider says its issuer is {metadata.get('issuer')!r},"
                f" not {self.config.issuer!r}"
            )
        for key in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = metadata.get(key)
            if isinstance(value, str) and urlparse(value).scheme != "https":
                raise ProviderUnavailable(f"{key} must be https (or set skip_verification)")

    async def _key_set(self, *, refresh: bool = False) -> KeySet:
        if self._jwks is None or refresh:
            jwks = await self._get_json((await self.metadata())["jwks_uri"])
            try:
                self._jwks = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError, KeyError) as exc:
                raise ProviderUnavailable(f"the provider's keys are unusable: {exc}") from None
        return self._jwks

    async def uses_pkce(self) -> bool:
        method = self.config.pkce_method
        if method == "auto":
            supported = (await self.metadata()).get("code_challenge_methods_supported") or []
            return "S256" in supported
        return method == "always"

    async def authorization_url(
        self, redirect_uri: str, state: str, nonce: str, code_verifier: str | None
    ) -> str:
        config = self.config
        params = {
            "response_type": "code",
            "client_id": config.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(config.scopes),
            "state": state,
            "nonce": nonce,
            **config.additional_authorization_parameters,
        }
        if code_verifier is not None:
            params["code_challenge"] = create_s256_code_challenge(code_verifier)
            params["code_challenge_method"] = "S256"
        endpoint = (await self.metadata())["authorization_endpoint"]
        return endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)

    def _client_secret(self, token_endpoint: str) -> str | None:
        """The configured secret, or (Synapse's client_secret_jwt_key) a fresh signed
        JWT standing in for it."""
        config, key = self.config, self.config.client_secret_jwt_key
        if key is None or config.client_auth_method == "private_key_jwt":
            return config.client_secret
        now = int(time.time())
        assert self._client_key is not None
        payload = {"iat": now, "exp": now + 600, **key.jwt_payload}
        return jwt.encode(dict(key.jwt_header), payload, self._client_key)

    def _client_auth(self, token_endpoint: str, form: dict[str, str]) -> dict[str, str]:
        """Authenticate the client as configured: into `form`, or the headers returned."""
        config = self.config
        method = config.client_auth_method
        if method == "private_key_jwt":
            assert config.client_secret_jwt_key is not None
            alg = config.client_secret_jwt_key.jwt_header["alg"]
            assertion = private_key_jwt_sign(
                self._client_key, config.client_id, token_endpoint, alg=alg
            )
            form["client_id"] = config.client_id
            form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            form["client_assertion"] = assertion
            return {}
        secret = self._client_secret(token_endpoint) or ""
        if method == "client_secret_basic":
            # RFC 6749 2.3.1: each part form-encoded, then Basic.
            pair = f"{quote(config.client_id, safe='')}:{quote(secret, safe='')}"
            return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
        form["client_id"] = config.client_id
        if method == "client_secret_post":
            form["client_secret"] = secret
        return {}

    async def exchange_code(
        self, code: str, redirect_uri: str, code_verifier: str | None
    ) -> dict[str, Any]:
        """The token endpoint's answer to the authorization code."""
        endpoint = (await self.metadata())["token_endpoint"]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier is not None:
            form["code_verifier"] = code_verifier
        headers = self._client_auth(endpoint, form)
        try:
            async with self._http().post(endpoint, data=form, headers=headers) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ProviderUnavailable(f"token endpoint: {exc or type(exc).__name__}") from None
        if not isinstance(body, dict):
            raise ProviderUnavailable("the token endpoint did not answer a JSON object")
        if status != 200 or "error" in body:
            why = body.get("error_description") or body.get("error") or status
            raise LoginRefused(f"the provider refused the code: {why}")
        return body

    async def id_token_claims(self, token: dict[str, Any], nonce: str) -> dict[str, Any]:
        """The id token's claims, once its signature and claims pass authlib's checks."""
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise LoginRefused("the provider sent no id token")
        config, metadata = self.config, await self.metadata()
        registry = JWSRegistry(algorithms=self._algorithms(metadata), strict_check_header=False)
        try:
            try:
                decoded = jwt.decode(id_token, await self._key_set(), registry=registry)
            except InvalidKeyIdError:
                decoded = jwt.decode(id_token, await self._key_set(refresh=True), registry=registry)
            claims = CodeIDToken(
                decoded.claims,
                decoded.header,
                {
                    "iss": {"essential": True, "value": metadata["issuer"]},
                    "aud": {"essential": True, "value": config.client_id},
                },
                {
                    "nonce": nonce,
                    "client_id": config.client_id,
                    "access_token": token.get("access_token"),
                },
            )
            claims.validate(leeway=ID_TOKEN_LEEWAY_S)
        except JoseError as exc:
            raise LoginRefused(
                f"the id token was refused: {exc.description or exc.error}"
            ) from None
        if claims.get("nonce") != nonce:
            raise LoginRefused("the id token was refused: invalid_claim: Invalid claim 'nonce'")
        return dict(claims)

    def _algorithms(self, metadata: dict[str, Any]) -> list[str]:
        return list(
            self.config.id_token_signing_alg_values_supported
            or metadata.get("id_token_signing_alg_values_supported")
            or ["RS256"]
        )

    async def _decode(self, token: str, options: dict[str, Any]) -> dict[str, Any]:
        """A token signed by this provider: its claims, checked against `options`."""
        registry = JWSRegistry(
            algorithms=self._algorithms(await self.metadata()), strict_check_header=False
        )
        try:
            decoded = jwt.decode(token, await self._key_set(), registry=registry)
        except InvalidKeyIdError:
            decoded = jwt.decode(token, await self._key_set(refresh=True), registry=registry)
        JWTClaimsRegistry(leeway=ID_TOKEN_LEEWAY_S, **options).validate(decoded.claims)
        return decoded.claims

    async def logout_token_claims(self, token: str) -> dict[str, Any]:
        """OpenID Connect Back-Channel Logout: a logout token's claims once checked
        (signature, issuer, audience, issued-at, the logout event, no nonce)."""
        options = {
            "iss": {"essential": True, "value": (await self.metadata())["issuer"]},
            "aud": {"essential": True, "value": self.config.client_id},
            "iat": {"essential": True},
        }
        try:
            claims = await self._decode(token, options)
        except JoseError as exc:
            raise LoginRefused(f"{exc.description or exc.error}") from None
        events = claims.get("events")
        if not isinstance(events, dict) or LOGOUT_EVENT not in events:
            raise LoginRefused("not a logout token (no back-channel logout event)")
        if "nonce" in claims:
            raise LoginRefused("a logout token may not have a nonce")
        return claims

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        endpoint = (await self.metadata()).get("userinfo_endpoint")
        if not isinstance(endpoint, str):
            raise ProviderUnavailable("the provider has no userinfo endpoint")
        return await self._get_json(endpoint, headers={"Authorization": f"Bearer {access_token}"})

    async def user_claims(
        self, code: str, redirect_uri: str, code_verifier: str | None, nonce: str
    ) -> dict[str, Any]:
        """What the provider says of the user who just signed in: the id token's
        claims, or userinfo's when so configured (or when openid was not asked)."""
        token = await self.exchange_code(code, redirect_uri, code_verifier)
        uses_id_token = "openid" in self.config.scopes
        claims = await self.id_token_claims(token, nonce) if uses_id_token else {}
        if self.config.user_profile_method == "userinfo_endpoint" or not uses_id_token:
            access_token = token.get("access_token")
            if not isinstance(access_token, str):
                raise LoginRefused("the provider sent no access token")
            info = await self.userinfo(access_token)
            if uses_id_token and info.get("sub") != claims.get("sub"):
                raise LoginRefused("userinfo names another subject than the id token")
            claims = {**claims, **info}
        return claims


def new_state() -> str:
    return generate_token(32)
