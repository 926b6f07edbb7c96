"""KeyService on a KMS key."""

from __future__ import annotations

from collections.abc import Mapping

from crmsync.stores.aws import client


class KmsKeyService:
    def __init__(self, key_id: str) -> None:
        self._key = key_id
        self._kms = client("kms")

    def generate_data_key(self, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        response = self._kms.generate_data_key(
            KeyId=self._key, KeySpec="AES_256", EncryptionContext=dict(context)
        )
        return response["Plaintext"], response["CiphertextBlob"]

    def decrypt_data_key(self, encrypted_key: bytes, context: Mapping[str, str]) -> bytes:
        response = self._kms.decrypt(
            CiphertextBlob=encrypted_key, KeyId=self._key, EncryptionContext=dict(context)
        )
        plaintext: bytes = response["Plaintext"]
        return plaintext
