"""Who is calling: the principal, taken from the JWT claims that API Gateway verified."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from crmsync.errors import Forbidden, Unauthorized
from crmsync.ids import check_id

Role = Literal["admin", "member", "service"]
ROLES: tuple[Role, ...] = ("admin", "member", "service")


class Principal(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant_id: str
    user_id: str
    role: Role

    @property
    def can_write_directory(self) -> bool:
        return self.role in ("admin", "service")

    def require_directory_writer(self) -> None:
        if not self.can_write_directory:
            raise Forbidden("only an admin or service token may change the directory")


def principal_from_claims(
    claims: Mapping[str, Any] | None, tenant_claim: str = "tenant_id", role_claim: str = "role"
) -> Principal:
    """Build the principal from verified claims. Missing or malformed claims are a 401/403."""
    if not claims:
        raise Unauthorized("no verified token claims on the request")
    sub = claims.get("sub")
    tenant = claims.get(tenant_claim)
    role = claims.get(role_claim, "member")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("the token has no subject (sub)")
    if not isinstance(tenant, str) or not tenant:
        raise Forbidden(f"the token has no {tenant_claim} claim")
    if role not in ROLES:
        raise Forbidden(f"the token's {role_claim} claim must be one of {', '.join(ROLES)}")
    check_id(tenant, "tenant id")
    check_id(sub, "user id")
    return Principal(tenant_id=tenant, user_id=sub, role=role)
