"""User-interactive authentication: the stages a client must complete before a
sensitive request runs, tracked in server-side sessions.

A session is bound to the operation it was started for (method and path) and to
the user making it, so completed stages cannot be replayed to authorise something
else. It is not bound to the body: clients commonly add or change parameters
between stages, and the request that completes the flow is the one acted on.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from homeserver.services.accounts.accounts import storable
from homeserver.services.accounts.login import LoginService
from homeserver.services.core.clock import now_ms
from homeserver.services.core.errors import ServiceError
from homeserver.services.threepids.validation import ThreepidValidation
from homeserver.storage.accounts import registration_tokens, uia
from homeserver.storage.core.pool import Database

DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"
REGISTRATION_TOKEN = "m.login.registration_token"
SSO = "m.login.sso"  # completed through its fallback page, never by a submitted body
EMAIL_IDENTITY = "m.login.email.identity"
SESSION_LIFETIME_MS = 30 * 60 * 1000

Flows = Sequence[Sequence[str]]


class AuthIncomplete(Exception):
    """More stages are needed: the body of the spec's 401 response."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body.get("error", "Authentication required"))
        self.body = body


@dataclass(frozen=True)
class Challenge:
    """What a request needs: the flows it accepts, for whom, and what it is."""

    flows: Flows
    request_key: str
    user_id: str | None = None  # the user the stages must prove to be, when known
    params: dict[str, Any] = field(default_factory=dict)


def request_key(method: str, path: str) -> str:
    """What a session authorises: one endpoint (its path includes any ids in it)."""
    return f"{method} {path}"


def _incomplete(
    challenge: Challenge, session_id: str, completed: list[str], error: ServiceError | None = None
) -> AuthIncomplete:
    body: dict[str, Any] = {
        "flows": [{"stages": list(flow)} for flow in challenge.flows],
        "params": challenge.params,
        "session": session_id,
        "completed": completed,
    }
    if error is not None:
        body["errcode"] = error.errcode
        body["error"] = error.message
    return AuthIncomplete(body)


class UiaService:
    """User-interactive auth sessions, kept in the database."""

    def __init__(
        self,
        db: Database,
        server_name: str,
        login: LoginService,
        validation: ThreepidValidation,
    ) -> None:
        self.db = db
        self.server_name = server_name
        self.login = login
        self.validation = validation

    async def _new_session(self, challenge: Challenge) -> str:
        session_id = secrets.token_urlsafe(24)
        now = now_ms()
        async with self.db.pool.connection() as conn:
            for data in await uia.delete_expired(conn, now):
                if isinstance(data.get("registration_token"), str):
                    await registration_tokens.release_use(conn, data["registration_token"])
            await uia.create_session(
                conn,
                session_id,
                challenge.request_key,
                challenge.user_id,
                now,
                now + SESSION_LIFETIME_MS,
            )
        return session_id

    async def _run_stage(
        self, challenge: Challenge, kind: str, auth: dict[str, Any]
    ) -> dict[str, Any]:
        """Check one stage; the data it leaves in the session. Raises ServiceError."""
        if kind == DUMMY:
            return {}
        if kind == PASSWORD:
            user_id = await self.login.user_id_for(auth)
            if challenge.user_id is not None and user_id != challenge.user_id:
                raise ServiceError(403, "M_FORBIDDEN", "You can only authenticate as yourself")
            await self.login.check_user_password(user_id, auth.get("password"))
            return {"user_id": user_id}
        if kind == REGISTRATION_TOKEN:
            token = auth.get("token")
            if not isinstance(token, str) or not token:
                raise ServiceError(400, "M_BAD_JSON", "token must be a non-empty string")
            storable(token, "token")
            async with self.db.pool.connection() as conn:
                if not await registration_tokens.reserve_use(conn, token, now_ms()):
                    raise ServiceError(403, "M_FORBIDDEN", "Invalid registration token")
            return {"registration_token": token}
        if kind == SSO:
            raise ServiceError(401, "M_FORBIDDEN", "Complete single sign-on on its fallback page")
        if kind == EMAIL_IDENTITY:
            creds = auth.get("threepid_creds", auth.get("threepidCreds"))
            threepid = await self.validation.take(creds)
            return {
                "threepid": {
                    "medium": threepid.medium,
                    "address": threepid.address,
                    "validated_at": threepid.validated_at,
                }
            }
        raise ServiceError(400, "M_UNRECOGNIZED", f"Unsupported authentication type {kind}")

    async def session_info(self, session_id: str) -> uia.SessionRow | None:
        """An unexpired session (whose request and user its fallback page shows)."""
        if not session_id or "\x00" in session_id:
            return None
        async with self.db.pool.connection() as conn:
            return await uia.get_session(conn, session_id, now_ms())

    async def complete_sso(self, session_id: str, user_id: str) -> bool:
        """Mark single sign-on done in a session started for `user_id` (the account the
        provider just signed in); False when the session is unknown or someone else's."""
        async with self.db.pool.connection() as conn:
            session = await uia.get_session(conn, session_id, now_ms())
            if session is None or session.user_id != user_id:
                return False
            await uia.complete_stage(conn, session_id, SSO, {"user_id": user_id})
        return True

    async def authenticate(self, challenge: Challenge, auth: Any) -> dict[str, Any]:
        """Return the completed session's data once a flow is done; until then raise
        AuthIncomplete (with the failure, if the submitted stage failed)."""
        if auth is None:
            raise _incomplete(challenge, await self._new_session(challenge), [])
        if not isinstance(auth, dict):
            raise ServiceError(400, "M_BAD_JSON", "auth must be an object")
        session_id = auth.get("session")
        if session_id is None:
            session_id = await self._new_session(challenge)
            completed: list[str] = []
        else:
            if not isinstance(session_id, str):
                raise ServiceError(400, "M_BAD_JSON", "auth.session must be a string")
            storable(session_id, "auth.session")
            async with self.db.pool.connection() as conn:
                session = await uia.get_session(conn, session_id, now_ms())
            if session is None:
                raise ServiceError(400, "M_UNKNOWN", "Unknown or expired session")
            if session.request_key != challenge.request_key or session.user_id != challenge.user_id:
                raise ServiceError(
                    403, "M_FORBIDDEN", "This session was started for a different request"
                )
            completed = session.completed
        kind = auth.get("type")
        if kind == SSO and SSO in completed:
            kind = None
        if kind is not None:
            allowed = {stage for flow in challenge.flows for stage in flow}
            if not isinstance(kind, str):
                raise ServiceError(400, "M_BAD_JSON", "auth.type must be a string")
            if kind not in allowed:
                raise _incomplete(
                    challenge,
                    session_id,
                    completed,
                    ServiceError(
                        400, "M_UNRECOGNIZED", f"{kind} is not a stage of this request's flows"
                    ),
                )
            try:
                stage_data = await self._run_stage(challenge, kind, auth)
            except ServiceError as exc:
                if exc.errcode == "M_BAD_JSON":
                    raise
                raise _incomplete(challenge, session_id, completed, exc) from None
            async with self.db.pool.connection() as conn:
                completed = await uia.complete_stage(conn, session_id, kind, stage_data)
        for flow in challenge.flows:
            if all(stage in completed for stage in flow):
                async with self.db.pool.connection() as conn:
                    data = await uia.take_session(conn, session_id)
                if data is None:
                    raise ServiceError(400, "M_UNKNOWN", "Unknown or expired session")
                return data
        raise _incomplete(challenge, session_id, completed)
