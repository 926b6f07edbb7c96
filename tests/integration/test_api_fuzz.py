"""The published API (docs/openapi.json) fuzzed with schemathesis against the local stack:
data that fits the schema and data that does not, for every operation. Whatever comes in,
the answer is never a server error (SEC-5).

Each operation gets a tenant of its own, on the default plan: one operation's writes (a plan
chosen through the settings) do not change what another's requests reach. On that plan a user
may connect no mailbox, so the fuzzed IMAP connects stop at the plan check after validation
and never make the service dial a generated host name (its own tests cover those).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import Api

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
EXAMPLES_PER_MODE = 25  # per operation, for each of the two modes
AT_LEAST = 1000  # requests in all
# A JSON body is also sent under other media types (the review found 500s there first).
MEDIA_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=b",
    "application/xml",
    "application/octet-stream",
    "",
]


class Fuzzer:
    """Sends each generated case, and its body again under a drawn media type; counts."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.server_errors: list[str] = []

    def record(self, label: str, status: int, text: str, how: str) -> None:
        self.requests[label] += 1
        self.statuses[status] += 1
        if status >= 500:
            self.server_errors.append(f"{label} -> {status} {text[:200]}\n  {how}")

    def fuzz(self, operation: Any, mode: schemathesis.GenerationMode) -> None:
        api, label = self.api, f"{operation.method.upper()} {operation.path}"
        # a tenant of its own per operation (see the module's doc)
        headers = {"Authorization": f"Bearer {api.token(f'fz-{uuid.uuid4().hex[:10]}', 'u1', 'admin')}"}
        strategy = operation.as_strategy(generation_mode=mode)

        @settings(
            max_examples=EXAMPLES_PER_MODE,
            deadline=None,
            database=None,
            derandomize=True,  # the same requests each run: a failure here is reproducible
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(data=st.data())
        def run(data: st.DataObject) -> None:
            case = data.draw(strategy)
            response = case.call(base_url=api.base, headers=headers, session=api.http, timeout=30)
            self.record(label, response.status_code, response.text, case.as_curl_command())
            sent = case.as_transport_kwargs(base_url=api.base, headers=headers)
            if "json" in sent:  # the same body again, under another media type
                media_type = data.draw(st.sampled_from(MEDIA_TYPES))
                sent["headers"]["Content-Type"] = media_type
                sent["data"] = json.dumps(sent.pop("json")).encode()
                again = api.http.request(**sent, timeout=30)
                how = f"{case.as_curl_command()} as {media_type!r}"
                self.record(label, again.status_code, again.text, how)

        run()


@pytest.mark.rule("SEC-5")
def test_fuzzing_the_openapi_document_finds_no_server_error(api: Api) -> None:
    fuzzer = Fuzzer(api)
    for result in schemathesis.openapi.from_path(str(OPENAPI)).get_all_operations():
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            fuzzer.fuzz(result.ok(), mode)
    total = sum(fuzzer.requests.values())
    print(f"\nfuzzed {total} requests over {len(fuzzer.requests)} operations: {dict(fuzzer.statuses)}")
    assert fuzzer.server_errors == [], "\n".join(fuzzer.server_errors[:20])
    assert total >= AT_LEAST, fuzzer.requests
