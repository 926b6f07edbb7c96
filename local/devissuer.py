"""The local dev issuer: an RSA key that signs the CRM's JWTs on this machine, and the check
API Gateway's JWT authorizer makes (signature by kid, iss, aud, exp, nbf)."""

from __future__ import annotations

import base64
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parent.parent
KEY_DIR = ROOT / ".local" / "dev-issuer"
DEFAULT_ISSUER = "http://127.0.0.1:3000/_local/issuer"
DEFAULT_AUDIENCE = "crmsync-local"
KID = "crmsync-local-dev"


class AuthError(Exception):
    """The token is missing or does not verify (API Gateway answers 401)."""


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class DevIssuer:
    def __init__(
        self, issuer: str = DEFAULT_ISSUER, audience: str = DEFAULT_AUDIENCE, key_dir: Path = KEY_DIR
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self._key = self._load_or_create(key_dir / "private.pem")

    @staticmethod
    def _load_or_create(path: Path) -> rsa.RSAPrivateKey:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_bytes(pem)
            temporary.chmod(0o600)
            temporary.replace(path)  # two processes racing both end with one valid key file
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError(f"{path} does not hold an RSA key")
        return loaded

    def mint(self, tenant: str, user: str, role: str = "member", ttl: int = 3600, **extra: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user,
            "tenant_id": tenant,
            "role": role,
            "iat": now,
            "nbf": now - 5,
            "exp": now + ttl,
            "jti": str(uuid.uuid4()),
            **extra,
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": KID})

    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "alg": "RS256",
                    "kid": KID,
                    "n": _b64(numbers.n),
                    "e": _b64(numbers.e),
                }
            ]
        }

    def openid_configuration(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/jwks.json",
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def verify(self, authorization: str | None, issuer: str, audiences: list[str]) -> dict[str, Any]:
        """Check a bearer token as the HTTP API's JWT authorizer does; return its claims."""
        if not authorization:
            raise AuthError("no Authorization header")
        scheme, _, token = authorization.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else authorization.strip()
        try:
            header = jwt.get_unverified_header(token)
            if header.get("kid") != KID:
                raise AuthError("unknown signing key")
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key.public_key(),
                algorithms=["RS256"],
                audience=audiences,
                issuer=issuer,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as error:
            raise AuthError(str(error)) from error
        return claims
