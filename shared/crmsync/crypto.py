"""Envelope encryption of user secrets (SEC-3): a fresh data key from KMS per write,
AES-256-GCM locally, the tenant and account bound in as encryption context.

Opening caches the decrypted data key briefly (data key caching, as the AWS Encryption SDK's
caching materials manager does): keyed by the encrypted key and its context, for at most
`KEY_CACHE_S` and `KEY_CACHE_MAX` keys per Lambda instance, so a worker reading the same
account's token job after job asks KMS once in five minutes instead of once per job."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class KeyService(Protocol):
    """Port: what the KMS store offers."""

    def generate_data_key(self, context: Mapping[str, str]) -> tuple[bytes, bytes]: ...

    def decrypt_data_key(self, encrypted_key: bytes, context: Mapping[str, str]) -> bytes: ...


def _aad(context: Mapping[str, str]) -> bytes:
    return "&".join(f"{k}={context[k]}" for k in sorted(context)).encode()


KEY_CACHE_S = 300
KEY_CACHE_MAX = 512


class SecretBox:
    def __init__(self, keys: KeyService, clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = keys
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[bytes, bytes], tuple[float, bytes]] = OrderedDict()

    def _data_key(self, encrypted_key: bytes, context: Mapping[str, str]) -> bytes:
        key = (encrypted_key, _aad(context))
        now = self._clock()
        with self._lock:
            found = self._cache.get(key)
            if found is not None and found[0] > now:
                self._cache.move_to_end(key)
                return found[1]
        data_key = self._keys.decrypt_data_key(encrypted_key, context)  # KMS checks the context
        with self._lock:
            self._cache[key] = (now + KEY_CACHE_S, data_key)
            self._cache.move_to_end(key)
            while len(self._cache) > KEY_CACHE_MAX:
                self._cache.popitem(last=False)
        return data_key

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
        data_key = self._data_key(base64.b64decode(sealed["key"]), context)
        return AESGCM(data_key).decrypt(
            base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["data"]), _aad(context)
        )
