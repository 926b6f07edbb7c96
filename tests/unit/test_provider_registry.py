"""The registry is the one place that names providers: each vendor's bundle states its own
attachment limits, overridable by configuration, and a provider with no bundle gets the common
default."""

from __future__ import annotations

import json

import pytest

from crmsync.mail.limits import COMMON_TOTAL_BYTES, MB, limits_for
from crmsync.providers import registry


@pytest.mark.rule("ATT-5")
def test_each_mail_bundle_states_its_providers_attachment_limits() -> None:
    assert registry.providers("mail") == ["google", "microsoft"]
    google, microsoft = limits_for("google"), limits_for("microsoft")
    assert google.provider_label == "Gmail" and google.total_bytes == 25 * MB
    assert microsoft.per_file_bytes == 3 * MB and microsoft.inbound == "skip"
    assert "exe" not in (microsoft.allowed_types or set())
    for provider in registry.providers("mail"):
        assert registry.mail_limits(provider) == limits_for(provider)  # read from the bundle's class


@pytest.mark.rule("ATT-5")
def test_configuration_overrides_a_bundles_limits_and_a_bundle_less_provider_gets_the_default() -> None:
    overrides = json.dumps({"google": {"total_bytes": 10 * MB}, "imap": {"total_bytes": 5 * MB}})
    assert limits_for("google", overrides).total_bytes == 10 * MB
    assert limits_for("google", overrides).provider_label == "Gmail"  # the rest stays
    assert limits_for("imap").total_bytes == COMMON_TOTAL_BYTES
    assert limits_for("imap", overrides).total_bytes == 5 * MB
    assert registry.mail_limits("imap") is None
