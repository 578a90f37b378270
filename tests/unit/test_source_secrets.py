"""Every source's messages are masked with ``Source.secrets()``: the credentials its options hold, at any depth,
whatever the backend calls them."""

from __future__ import annotations

from typing import Any

from trackcheck.errors import SourceConnectError
from trackcheck.sources.base import FetchRequest, FetchResult, Source, SourceOptions


class CredentialOptions(SourceOptions):
    url: str = "amqp://svc:url-pw-1@broker:5672"
    password: str = "plain-pw-2"
    sasl_password: str = "sasl-pw-3"
    api_key: str = "key-4"
    token: str = "tok-5"
    nested: dict[str, Any] = {"client": {"secret": "deep-6"}, "headers": {"Authorization": "Bearer hdr-7"}}
    topic: str = "events"


class CredentialSource(Source):
    type_name = "credentials"
    options_model = CredentialOptions

    def fetch(self, request: FetchRequest) -> FetchResult:
        return FetchResult([])


def test_every_credential_option_is_masked_and_nothing_else() -> None:
    source = CredentialSource("bus", CredentialOptions())
    secrets = ["url-pw-1", "plain-pw-2", "sasl-pw-3", "key-4", "tok-5", "deep-6", "hdr-7"]
    said = source.error(SourceConnectError, f"could not log in with {' '.join(secrets)} on events", None)
    assert not any(secret in str(said) for secret in secrets), str(said)
    assert "on events" in str(said)  # a topic is not a secret
