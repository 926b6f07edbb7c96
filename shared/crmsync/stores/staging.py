"""Staged attachments in the data bucket (ATT-1): presigned POST uploads under `staging/`,
which the bucket's lifecycle rule expires after a day.

Key: staging/{tenant}/{user}/{attachment id}/{file name}"""

from __future__ import annotations

from typing import Any

from crmsync.stores.aws import client


class S3Staging:
    def __init__(self, bucket: str) -> None:
        self._bucket = bucket
        self._s3 = client("s3")

    @staticmethod
    def prefix(tenant_id: str, user_id: str, attachment_id: str) -> str:
        return f"staging/{tenant_id}/{user_id}/{attachment_id}/"

    def presign(self, key: str, max_bytes: int, expires_s: int) -> dict[str, Any]:
        """A browser uploads with this form; S3 refuses a file larger than `max_bytes` or
        another key (the policy's conditions)."""
        post: dict[str, Any] = self._s3.generate_presigned_post(
            Bucket=self._bucket,
            Key=key,
            Conditions=[["content-length-range", 1, max_bytes]],
            ExpiresIn=expires_s,
        )
        return post

    def find(self, prefix: str) -> tuple[str, int] | None:
        """The staged object under `prefix` (its key and size), or None if it is not there."""
        listed = self._s3.list_objects_v2(Bucket=self._bucket, Prefix=prefix, MaxKeys=2)
        contents = listed.get("Contents") or []
        if not contents:
            return None
        return str(contents[0]["Key"]), int(contents[0]["Size"])

    def read(self, key: str) -> bytes:
        body: bytes = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        return body
