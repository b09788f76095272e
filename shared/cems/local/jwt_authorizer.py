"""API Gateway's JWT authorizer as the local stack runs it, so console routes are checked locally as
they are on a stage (template.yaml: HttpApi's `OperatorJwt`, Cognito's OperatorPool).

What API Gateway checks for an HTTP API JWT authorizer, and so this does: the identity source (the
Authorization header, with or without "Bearer ") holds a JWT whose `kid` is in the issuer's JWKS and
whose RS256 signature verifies; `exp` is in the future and `nbf`/`iat` are not; `iss` is the
configured issuer; `aud` (ID tokens) or `client_id` (access tokens) is one of the audiences. Any
failure is 401 `{"message": "Unauthorized"}` and the function is not called. The claims reach the
function in `requestContext.authorizer.jwt.claims`, every value a string (a list as "[a b]").

The keys come from moto's Cognito (`/<pool id>/.well-known/jwks.json` on the moto server), whose
tokens name the same issuer as AWS's (`https://cognito-idp.<region>.amazonaws.com/<pool id>`).
PyJWT does the verifying: it is what the JWT checks are, and writing them by hand would be worse.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import jwt

from cems.local.cfn import Template

UNAUTHORIZED = {"message": "Unauthorized"}


@dataclass
class JwtAuthorizer:
    """One JWT authorizer of the HTTP API, with its issuer's keys read from `jwks_url` on first use."""

    name: str
    issuer: str
    audiences: tuple[str, ...]
    jwks_url: str
    _keys: dict[str, jwt.PyJWK] = field(default_factory=dict, repr=False)

    def claims(self, authorization: str | None) -> dict[str, str] | None:
        """The token's claims as API Gateway hands them on, or None when API Gateway would answer 401."""
        token = (authorization or "").strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        if not token:
            return None
        try:
            header = jwt.get_unverified_header(token)
            key = self._key(str(header.get("kid", "")))
            if key is None:
                return None
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                issuer=self.issuer,
                # The audience is checked below: API Gateway accepts `client_id` as well as `aud`.
                options={"verify_aud": False, "require": ["exp", "iss"]},
                leeway=0,
            )
        except (jwt.PyJWTError, ValueError):
            return None
        audience = claims.get("aud", claims.get("client_id"))
        audiences = audience if isinstance(audience, list) else [audience]
        if not any(a in self.audiences for a in audiences):
            return None
        return {name: _claim_text(value) for name, value in claims.items()}

    def _key(self, kid: str) -> jwt.PyJWK | None:
        if kid not in self._keys:
            with urllib.request.urlopen(self.jwks_url, timeout=10) as response:  # noqa: S310 - the local moto server
                for jwk in json.loads(response.read())["keys"]:
                    self._keys[str(jwk.get("kid", ""))] = jwt.PyJWK(jwk)
        return self._keys.get(kid)


def _claim_text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + " ".join(str(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def jwt_authorizers(template: Template, endpoint_url: str) -> dict[str, JwtAuthorizer]:
    """The JWT authorizers every HttpApi of the template declares, by name, their issuer and audience
    resolved from the local stack's resources (create_resources fills the Cognito refs)."""
    found: dict[str, JwtAuthorizer] = {}
    for api in template.resources_of_type("AWS::Serverless::HttpApi").values():
        authorizers = api.get("Properties", {}).get("Auth", {}).get("Authorizers", {})
        for name, raw in authorizers.items():
            if "JwtConfiguration" not in raw:
                continue
            config = template.resolve(raw["JwtConfiguration"])
            issuer = str(config["issuer"])
            pool_id = issuer.rstrip("/").rsplit("/", 1)[-1]
            found[name] = JwtAuthorizer(
                name=name,
                issuer=issuer,
                audiences=tuple(str(a) for a in config.get("audience", [])),
                jwks_url=f"{endpoint_url.rstrip('/')}/{pool_id}/.well-known/jwks.json",
            )
    return found
