"""The directory over the HTTP API: writes, case-insensitive lookups, events, isolation."""

from __future__ import annotations

import pytest

from local.stack import LocalStack
from tests.conftest import Api


def _event(stack: LocalStack, detail_type: str, tenant: str, **match: object) -> dict:
    return stack.wait_for_event(
        lambda e: (
            e["detail-type"] == detail_type
            and e["detail"]["tenant_id"] == tenant
            and all(e["detail"].get(k) == v for k, v in match.items())
        )
    )


def test_contact_found_by_address_in_any_case_and_event_published(
    api: Api, stack: LocalStack, tenant: str
) -> None:
    admin = api.token(tenant, "u1", "admin")
    put = api.call(
        "PUT",
        "/v1/directory/contacts/c1",
        admin,
        json={"name": "Ann Lee", "emails": ["Ann.Lee@Example.com", "ann@home.org"]},
    )
    assert put.status_code == 200, put.text
    assert put.json()["addresses"] == ["ann.lee@example.com", "ann@home.org"]

    found = api.call("GET", "/v1/directory/lookup", admin, params={"address": "ANN.LEE@EXAMPLE.COM"})
    assert found.status_code == 200
    body = found.json()
    assert body["address"] == "ann.lee@example.com"
    assert [c["id"] for c in body["contacts"]] == ["c1"]
    assert body["users"] == [] and body["leads"] == []

    event = _event(stack, "DirectoryEntryUpserted", tenant, id="c1")
    assert event["source"] == "crmsync"
    assert event["detail"]["addresses"] == ["ann.lee@example.com", "ann@home.org"]
    assert event["detail"]["version"] == 1


def test_changing_addresses_moves_the_lookup(api: Api, tenant: str) -> None:
    admin = api.token(tenant, "u1", "admin")
    api.call("PUT", "/v1/directory/contacts/c1", admin, json={"name": "A", "emails": ["old@x.io"]})
    changed = api.call("PUT", "/v1/directory/contacts/c1", admin, json={"name": "A", "emails": ["new@x.io"]})
    assert changed.json()["version"] == 2
    assert (
        api.call("GET", "/v1/directory/lookup", admin, params={"address": "old@x.io"}).json()["contacts"]
        == []
    )
    assert [
        c["id"]
        for c in api.call("GET", "/v1/directory/lookup", admin, params={"address": "NEW@x.io"}).json()[
            "contacts"
        ]
    ] == ["c1"]


def test_unchanged_put_writes_nothing_and_publishes_nothing(api: Api, stack: LocalStack, tenant: str) -> None:
    admin = api.token(tenant, "u1", "admin")
    body = {"name": "Same", "emails": ["same@x.io"]}
    first = api.call("PUT", "/v1/directory/leads/l1", admin, json=body).json()
    _event(stack, "DirectoryEntryUpserted", tenant, id="l1")
    again = api.call("PUT", "/v1/directory/leads/l1", admin, json=body).json()
    assert again["version"] == first["version"] == 1
    upserts = [
        e
        for e in stack.events
        if e["detail"].get("tenant_id") == tenant and e["detail-type"] == "DirectoryEntryUpserted"
    ]
    assert len(upserts) == 1


def test_users_leads_and_deals_answer_the_lookup(api: Api, tenant: str) -> None:
    service = api.token(tenant, "crm-backend", "service")
    assert (
        api.call(
            "PUT",
            "/v1/directory/users/u7",
            service,
            json={"name": "Una", "email": "una@corp.io", "alternative_addresses": ["U.Alt@corp.io"]},
        ).status_code
        == 200
    )
    assert (
        api.call(
            "PUT", "/v1/directory/contacts/c1", service, json={"name": "Carl", "emails": ["carl@client.io"]}
        ).status_code
        == 200
    )
    assert (
        api.call(
            "PUT",
            "/v1/directory/leads/l1",
            service,
            json={"name": "Carl (lead)", "emails": ["CARL@client.io"]},
        ).status_code
        == 200
    )
    deal = {"name": "Big deal", "status": "open", "contact_ids": ["c1"], "updated_at": "2026-11-01T10:00:00Z"}
    assert api.call("PUT", "/v1/directory/deals/d1", service, json=deal).status_code == 200

    member = api.token(tenant, "u7", "member")
    carl = api.call("GET", "/v1/directory/lookup", member, params={"address": "Carl@Client.IO"}).json()
    assert [c["id"] for c in carl["contacts"]] == ["c1"]
    assert [lead["id"] for lead in carl["leads"]] == ["l1"]
    assert [d["id"] for d in carl["deals"]] == ["d1"]
    una = api.call("GET", "/v1/directory/lookup", member, params={"address": "u.alt@CORP.io"}).json()
    assert [u["id"] for u in una["users"]] == ["u7"]

    # the deal no longer names the contact: the lookup stops finding it
    api.call("PUT", "/v1/directory/deals/d1", service, json={**deal, "contact_ids": []})
    assert (
        api.call("GET", "/v1/directory/lookup", member, params={"address": "carl@client.io"}).json()["deals"]
        == []
    )


def test_delete_removes_entry_and_its_addresses(api: Api, stack: LocalStack, tenant: str) -> None:
    admin = api.token(tenant, "u1", "admin")
    api.call("PUT", "/v1/directory/contacts/c9", admin, json={"name": "Gone", "emails": ["gone@x.io"]})
    assert api.call("DELETE", "/v1/directory/contacts/c9", admin).status_code == 204
    assert api.call("GET", "/v1/directory/contacts/c9", admin).status_code == 404
    assert (
        api.call("GET", "/v1/directory/lookup", admin, params={"address": "gone@x.io"}).json()["contacts"]
        == []
    )
    _event(stack, "DirectoryEntryDeleted", tenant, id="c9")
    # DELETE is idempotent
    assert api.call("DELETE", "/v1/directory/contacts/c9", admin).status_code == 204


def test_tenant_settings_round_trip_with_event(api: Api, stack: LocalStack, tenant: str) -> None:
    admin = api.token(tenant, "u1", "admin")
    defaults = api.call("GET", "/v1/directory/settings", admin).json()
    assert defaults == {
        "plan": "essential",
        "automation_sender": "tenant_provider",
        "apply_gap_changes": False,
    }
    new = {"plan": "professional", "automation_sender": "default_account", "apply_gap_changes": True}
    crm = api.token(tenant, "crm", "service")  # the plan is billing data: the CRM backend sets it
    assert api.call("PUT", "/v1/directory/settings", crm, json=new).json() == new
    assert api.call("GET", "/v1/directory/settings", api.token(tenant, "u2")).json() == new
    assert _event(stack, "TenantSettingsChanged", tenant)["detail"]["plan"] == "professional"


@pytest.mark.rule("SEC-4")
def test_tenant_b_neither_reads_nor_writes_tenant_a(api: Api, tenant: str) -> None:
    a_admin = api.token(tenant, "u1", "admin")
    other = f"{tenant}-b"
    b_admin = api.token(other, "u1", "admin")
    api.call("PUT", "/v1/directory/contacts/c1", a_admin, json={"name": "A's", "emails": ["shared@x.io"]})
    api.call("PUT", "/v1/directory/settings", api.token(tenant, "crm", "service"), json={"plan": "power"})

    assert (
        api.call("GET", "/v1/directory/lookup", b_admin, params={"address": "shared@x.io"}).json()["contacts"]
        == []
    )
    assert api.call("GET", "/v1/directory/contacts/c1", b_admin).status_code == 404
    assert api.call("GET", "/v1/directory/settings", b_admin).json()["plan"] == "essential"
    # B writing the same ids lands in B's directory only
    api.call("PUT", "/v1/directory/contacts/c1", b_admin, json={"name": "B's", "emails": ["b@x.io"]})
    api.call("DELETE", "/v1/directory/contacts/c1", b_admin)
    a_view = api.call("GET", "/v1/directory/contacts/c1", a_admin).json()
    assert a_view["data"]["name"] == "A's" and a_view["addresses"] == ["shared@x.io"]


@pytest.mark.rule("SEC-4")
def test_a_member_cannot_write_the_directory(api: Api, tenant: str) -> None:
    member = api.token(tenant, "u2", "member")
    for method, path, body in [
        ("PUT", "/v1/directory/contacts/c1", {"name": "X", "emails": []}),
        ("DELETE", "/v1/directory/contacts/c1", None),
        ("PUT", "/v1/directory/settings", {"plan": "enterprise"}),
    ]:
        response = api.call(method, path, member, json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert "admin or service" in response.json()["error"]["message"]
    assert api.call("GET", "/v1/directory/settings", member).json()["plan"] == "essential"


@pytest.mark.rule("SEC-4")
def test_missing_expired_or_foreign_tokens_get_401(
    api: Api, stack: LocalStack, tenant: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from local.devissuer import DevIssuer

    assert api.call("GET", "/v1/directory/settings").status_code == 401
    expired = api.token(tenant, "u1", "admin", exp=1_700_000_000)
    assert api.call("GET", "/v1/directory/settings", expired).status_code == 401
    wrong_audience = api.token(tenant, "u1", "admin", aud="someone-else")
    assert api.call("GET", "/v1/directory/settings", wrong_audience).status_code == 401
    forged = DevIssuer(key_dir=tmp_path).mint(tenant, "u1", "admin")  # same claims, another key
    assert api.call("GET", "/v1/directory/settings", forged).status_code == 401
    assert api.call("GET", "/v1/directory/settings", "not-a-jwt").status_code == 401
    assert api.call("GET", "/health").status_code == 200


@pytest.mark.rule("SEC-4")
def test_token_without_tenant_claim_is_refused(api: Api) -> None:
    token = api.issuer.mint("", "u1", "admin")
    response = api.call("GET", "/v1/directory/settings", token)
    assert response.status_code == 403
    assert "tenant_id" in response.json()["error"]["message"]


@pytest.mark.rule("SEC-5")
@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ('{"name": "X", "emails": ["a@b.io"]', "body", "malformed JSON"),
        ({"name": "X", "emails": ["a@b.io"], "favourite": 1}, "body.favourite", "Extra inputs"),
        ({"name": 42, "emails": []}, "body.name", "valid string"),
        ({"name": "X", "emails": "a@b.io"}, "body.emails", "valid list"),
        ({"name": "X", "emails": ["not an address"]}, "body.emails.0", "not a valid e-mail address"),
        (
            {"name": "X", "emails": ["a@b.io\r\nBcc: evil@x.io"]},
            "body.emails.0",
            "not a valid e-mail address",
        ),
        ({"emails": []}, "body.name", "Field required"),
    ],
)
def test_bad_input_gets_422_naming_the_field(
    api: Api, tenant: str, body: object, field: str, problem: str
) -> None:
    admin = api.token(tenant, "u1", "admin")
    if isinstance(body, str):
        response = api.call(
            "PUT", "/v1/directory/contacts/c1", admin, data=body, headers={"content-type": "application/json"}
        )
    else:
        response = api.call("PUT", "/v1/directory/contacts/c1", admin, json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert any(d["field"] == field and problem in d["problem"] for d in error["details"]), error
    assert field in error["message"]
    assert api.call("GET", "/v1/directory/contacts/c1", admin).status_code == 404  # nothing half-written


@pytest.mark.rule("SEC-5")
def test_bad_path_and_query_values_are_4xx(api: Api, tenant: str) -> None:
    admin = api.token(tenant, "u1", "admin")
    assert api.call("GET", "/v1/directory/planets/p1", admin).status_code == 422
    bad_id = api.call("PUT", "/v1/directory/contacts/" + "x" * 200, admin, json={"name": "X"})
    assert bad_id.status_code == 422 and "id must be" in bad_id.json()["error"]["message"]
    missing = api.call("GET", "/v1/directory/lookup", admin)
    assert missing.status_code == 422 and "query.address" in missing.json()["error"]["message"]
    assert api.call("GET", "/v1/directory/lookup", admin, params={"address": "nope"}).status_code == 422
    bad_plan = api.call("PUT", "/v1/directory/settings", admin, json={"plan": "gold"})
    assert bad_plan.status_code == 422 and "body.plan" in bad_plan.json()["error"]["message"]
