"""Fast checks of pieces that need no AWS: the OAuth state, sealing, claims, the template reader."""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest

from crmsync.accounts.models import TokenSet
from crmsync.accounts.state import StateError, StateSigner
from crmsync.auth import principal_from_claims
from crmsync.crypto import KEY_CACHE_S, SecretBox
from crmsync.errors import Forbidden, Unauthorized
from local.cfn import Resolver


class LocalKeys:
    """A KeyService with keys in memory: what KMS does, without KMS."""

    def __init__(self) -> None:
        self.master = os.urandom(32)

    def generate_data_key(self, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = os.urandom(32)
        nonce = os.urandom(12)
        wrapped = nonce + AESGCM(self.master).encrypt(nonce, key, repr(sorted(context.items())).encode())
        return key, wrapped

    def decrypt_data_key(self, encrypted_key: bytes, context: Mapping[str, str]) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(self.master).decrypt(
            encrypted_key[:12], encrypted_key[12:], repr(sorted(context.items())).encode()
        )


@pytest.mark.rule("ACC-2")
def test_state_round_trip_and_refusals() -> None:
    signer = StateSigner(b"k" * 32, ttl_s=60)
    claims = signer.issue("t1", "u1", "google", now=1000)
    token = signer.sign(claims)
    assert signer.verify(token, "google", now=1030) == claims
    with pytest.raises(StateError, match="expired_state"):
        signer.verify(token, "google", now=1061)
    with pytest.raises(StateError, match="invalid_state"):
        signer.verify(token, "microsoft", now=1030)  # issued for another provider
    with pytest.raises(StateError, match="invalid_state"):
        StateSigner(b"j" * 32).verify(token, "google", now=1030)  # another key
    for broken in ("", "abc", token + "x", "." + token.split(".")[1], token.replace(".", ".!")):
        with pytest.raises(StateError):
            signer.verify(broken, "google", now=1030)


def test_state_key_is_read_once_and_must_be_long_enough() -> None:
    reads: list[int] = []

    def key() -> bytes:
        reads.append(1)
        return b"s" * 40

    signer = StateSigner(key)
    assert reads == []  # nothing fetched at construction (cold start)
    signer.sign(signer.issue("t", "u", "google"))
    signer.sign(signer.issue("t", "u", "google"))
    assert reads == [1]
    with pytest.raises(ValueError, match="32 bytes"):
        StateSigner(b"short").sign(StateSigner(b"x" * 32).issue("t", "u", "google"))


@pytest.mark.rule("SEC-3")
def test_sealed_secrets_open_only_in_their_own_context() -> None:
    box = SecretBox(LocalKeys())
    secret = TokenSet(refresh_token="1//very-secret", password="hunter2").model_dump_json().encode()
    sealed = box.seal(secret, {"tenant_id": "t1", "account_id": "a1"})
    assert b"very-secret" not in repr(sealed).encode() and "hunter2" not in repr(sealed)
    assert box.open(sealed, {"tenant_id": "t1", "account_id": "a1"}) == secret
    with pytest.raises(Exception):  # noqa: B017 - any failure to open is right here
        box.open(sealed, {"tenant_id": "t1", "account_id": "a2"})  # copied to another account
    assert "very-secret" not in repr(TokenSet(refresh_token="very-secret")) + str(
        TokenSet(refresh_token="very-secret")
    )


@pytest.mark.rule("SEC-3")
def test_a_data_key_is_asked_of_kms_once_in_a_while_per_secret_and_context() -> None:
    class Counting(LocalKeys):
        def __init__(self) -> None:
            super().__init__()
            self.decrypts = 0

        def decrypt_data_key(self, encrypted_key: bytes, context: Mapping[str, str]) -> bytes:
            self.decrypts += 1
            return super().decrypt_data_key(encrypted_key, context)

    keys, now = Counting(), [0.0]
    box = SecretBox(keys, clock=lambda: now[0])
    mine, theirs = {"tenant_id": "t1", "account_id": "a1"}, {"tenant_id": "t1", "account_id": "a2"}
    sealed = box.seal(b"token", mine)
    assert [box.open(sealed, mine) for _ in range(3)] == [b"token"] * 3
    assert keys.decrypts == 1  # the data key is kept a while
    with pytest.raises(Exception):  # noqa: B017 - another context never meets the kept key
        box.open(sealed, theirs)
    assert keys.decrypts == 2
    now[0] += KEY_CACHE_S + 1
    assert box.open(sealed, mine) == b"token" and keys.decrypts == 3  # and asked again after


@pytest.mark.rule("SEC-4")
def test_claims_become_a_principal_or_a_clear_refusal() -> None:
    assert principal_from_claims({"sub": "u1", "tenant_id": "t1", "role": "admin"}).role == "admin"
    assert principal_from_claims({"sub": "u1", "tenant_id": "t1"}).role == "member"
    assert principal_from_claims({"sub": "u1", "org": "t9", "r": "service"}, "org", "r").tenant_id == "t9"
    with pytest.raises(Unauthorized):
        principal_from_claims({"tenant_id": "t1"})
    with pytest.raises(Forbidden, match="tenant_id"):
        principal_from_claims({"sub": "u1"})
    with pytest.raises(Forbidden, match="role"):
        principal_from_claims({"sub": "u1", "tenant_id": "t1", "role": "root"})


def test_resolver_evaluates_intrinsics_and_conditions() -> None:
    template = {
        "Parameters": {
            "Stage": {"Type": "String", "Default": "dev"},
            "Origins": {"Type": "CommaDelimitedList"},
        },
        "Conditions": {"IsProd": {"Fn::Equals": [{"Ref": "Stage"}, "prod"]}},
        "Resources": {},
    }
    resolver = Resolver(
        template, {"Origins": "https://a, https://b"}, {"AWS::Region": "eu-west-1", "AWS::NoValue": None}
    )
    resolver.refs["Queue"] = "https://sqs/q"
    resolver.attrs["Queue"] = {"Arn": "arn:q"}
    assert resolver.resolve({"Ref": "Origins"}) == ["https://a", "https://b"]
    assert resolver.resolve({"Fn::Sub": "x-${Stage}-${AWS::Region}-${Queue.Arn}"}) == "x-dev-eu-west-1-arn:q"
    assert resolver.resolve({"Fn::Sub": ["${A}/${Queue}", {"A": "a"}]}) == "a/https://sqs/q"
    assert resolver.resolve({"Fn::If": ["IsProd", "big", "small"]}) == "small"
    assert resolver.resolve({"Fn::Join": ["-", ["a", {"Ref": "Stage"}]]}) == "a-dev"
    assert resolver.resolve({"Fn::Select": [1, {"Fn::Split": [",", "p,q"]}]}) == "q"
    assert resolver.resolve({"List": ["a", {"Ref": "AWS::NoValue"}]}) == {"List": ["a"]}
    with pytest.raises(KeyError, match="Missing"):
        resolver.resolve({"Ref": "Missing"})
    with pytest.raises(ValueError, match="no default"):
        Resolver({"Parameters": {"Need": {"Type": "String"}}, "Resources": {}}, {}, {})


@pytest.mark.rule("MAIL-8")
def test_outlook_syncs_the_chosen_folders_and_sent_items_always() -> None:
    from datetime import UTC, datetime

    from crmsync.accounts.models import Account, AccountSettings
    from crmsync.providers.microsoft.folders import synced_folders

    def folders(*chosen: str) -> tuple[str, ...]:
        now = datetime.now(UTC)
        account = Account(
            account_id="a",
            tenant_id="t",
            user_id="u",
            provider="microsoft",
            purpose="mail",
            address="seller@outlook.test",
            status="connected",
            settings=AccountSettings(labels_or_folders=list(chosen)),
            connected_at=now,
            updated_at=now,
        )
        return synced_folders(account)

    assert folders() == ("inbox", "sentitems")  # nothing chosen: Inbox, and Sent Items
    assert folders("Clients", "Inbox/Acme") == ("Clients", "Inbox/Acme", "sentitems")
    # well-known names in any case are one folder; Sent Items is never there twice
    assert folders("INBOX", "inbox", "SentItems", "/Clients/") == ("inbox", "sentitems", "Clients")
