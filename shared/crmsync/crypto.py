"""Envelope encryption of user secrets (SEC-3): a fresh data key from KMS per write,
AES-256-GCM locally, the tenant and account bound in as encryption context."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class KeyService(Protocol):
    """Port: what the KMS store offers."""

    def generate_data_key(self, context: Mapping[str, str]) -> tuple[bytes, bytes]: ...

    def decrypt_data_key(self, encrypted_key: bytes, context: Mapping[str, str]) -> bytes: ...


def _aad(context: Mapping[str, str]) -> bytes:
    return "&".join(f"{k}={context[k]}" for k in sorted(context)).encode()


class SecretBox:
    def __init__(self, keys: KeyService) -> None:
        self._keys = keys

    def seal(self, plaintext: bytes, context: Mapping[str, str]) -> dict[str, str]:
        data_key, encrypted_key = self._keys.generate_data_key(context)
        nonce = os.urandom(12)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, _aad(context))
        return {
            "v": "1",
            "key": base64.b64encode(encrypted_key).decode(),
            "nonce": base64.b64encode(nonce).decode(),
            "data": base64.b64encode(ciphertext).decode(),
        }

    def open(self, sealed: Mapping[str, str], context: Mapping[str, str]) -> bytes:
        data_key = self._keys.decrypt_data_key(base64.b64decode(sealed["key"]), context)
        return AESGCM(data_key).decrypt(
            base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["data"]), _aad(context)
        )
