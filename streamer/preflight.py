"""Start-up checks of a Kafka client's settings and credentials, before any work starts.

A wrong password must not look like a slow broker: kafka-python retries a failed SASL
login until its bootstrap times out, and whether the reason reaches its log is a race
with the broker closing the socket. `check_kafka` logs in once itself, on a plain
socket (kafka-python's own protocol and SASL code), so the broker's answer is read
before the socket closes; then it asks the broker, as the client will be, whether the
topics and group may be used. Each failure is one `PreflightError` that names the cause
and the setting to change, and never carries a secret.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kafka.admin import KafkaAdminClient
from kafka.errors import GroupAuthorizationFailedError, KafkaError
from kafka.net.sasl import get_sasl_mechanism
from kafka.net.transport import KafkaSSLTransport
from kafka.protocol.metadata import ApiVersionsRequest
from kafka.protocol.parser import KafkaProtocol
from kafka.protocol.sasl import SaslAuthenticateRequest, SaslHandshakeRequest

PROBE_TIMEOUT_S = 10.0
PASSWORD_SETTING = "RECSTREAM_KAFKA_PASSWORD"
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
PROTOCOLS = ("PLAINTEXT", "SSL", *SASL_PROTOCOLS)
TOPIC_AUTHORIZATION_FAILED = 29


class PreflightError(RuntimeError):
    """A service is unreachable, refuses the credentials, or the settings contradict."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bootstrap_hosts(bootstrap: str | Sequence[str]) -> list[tuple[str, int]]:
    servers = bootstrap.split(",") if isinstance(bootstrap, str) else list(bootstrap)
    hosts = []
    for server in (s.strip() for s in servers if s.strip()):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            raise PreflightError(f"bootstrap server {server!r} is not host:port: check --bootstrap")
        hosts.append((host.strip("[]"), int(port)))
    if not hosts:
        raise PreflightError("no bootstrap server: set --bootstrap")
    return hosts


def check_kafka_options(
    bootstrap: str | Sequence[str], options: Mapping[str, Any], allow_plaintext_secrets: bool
) -> None:
    """Combinations that cannot work, or that would send a password in clear (no I/O)."""
    protocol = options.get("security_protocol", "PLAINTEXT")
    if protocol not in PROTOCOLS:
        raise PreflightError(
            f"kafka_options.security_protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}"
        )
    has_password = bool(options.get("sasl_plain_password"))
    if protocol not in SASL_PROTOCOLS:
        if has_password or options.get("sasl_mechanism"):
            raise PreflightError(
                f"a SASL mechanism or {PASSWORD_SETTING} is set, but kafka_options."
                f"security_protocol is {protocol}: set it to SASL_SSL (or unset the password)"
            )
        return
    mechanism = options.get("sasl_mechanism")
    if not mechanism:
        raise PreflightError(
            f"kafka_options.security_protocol is {protocol}: set kafka_options.sasl_mechanism"
            " (SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN)"
        )
    if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
        options.get("sasl_plain_username") and has_password
    ):
        raise PreflightError(
            f"Kafka SASL {mechanism} needs a user and a password: set kafka_options."
            f"sasl_plain_username and {PASSWORD_SETTING}"
        )
    remote = [host for host, _ in bootstrap_hosts(bootstrap) if not is_loopback(host)]
    if protocol == "SASL_PLAINTEXT" and remote and not allow_plaintext_secrets:
        raise PreflightError(
            f"refusing to log in to Kafka at {remote[0]} over a plain connection (SASL_PLAINTEXT"
            " exposes the password or its proof): set kafka_options.security_protocol to"
            " SASL_SSL, or allow_plaintext_secrets = true on a trusted network"
        )


def check_kafka(
    bootstrap: str | Sequence[str],
    options: Mapping[str, Any],
    *,
    read: Iterable[str] = (),
    write: Iterable[str] = (),
    group: str | None = None,
    allow_plaintext_secrets: bool = False,
) -> None:
    """Settings, then: reachable, logged in, and allowed to read `read`, write `write`
    (topics that do not exist yet are left to the broker's auto-creation) and use `group`."""
    check_kafka_options(bootstrap, options, allow_plaintext_secrets)
    hosts = bootstrap_hosts(bootstrap)
    failures = []
    for host, port in hosts:
        try:
            _log_in(host, port, options)
            break
        except OSError as error:  # unreachable: try the next bootstrap server
            failures.append(f"{host}:{port}: {error}")
    else:
        raise PreflightError(f"cannot reach Kafka ({'; '.join(failures)}): check --bootstrap")
    _check_access(bootstrap, options, list(read), list(write), group)


def _log_in(host: str, port: int, options: Mapping[str, Any]) -> None:
    """ApiVersions, then the SASL exchange when configured, on one short-lived socket."""
    protocol = options.get("security_protocol", "PLAINTEXT")
    where = f"Kafka at {host}:{port}"
    with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as raw:
        sock: socket.socket = raw
        if protocol in ("SSL", "SASL_SSL"):
            config = {**KafkaSSLTransport.DEFAULT_CONFIG, **_only(KafkaSSLTransport, options)}
            try:
                context = KafkaSSLTransport._build_ssl_context(
                    config
                )  # kafka-python's own TLS set-up
                sock = context.wrap_socket(raw, server_hostname=host)
            except (ssl.SSLError, ssl.CertificateError) as error:
                raise PreflightError(
                    f"TLS with {where} failed ({error}): check kafka_options.ssl_cafile,"
                    " ssl_check_hostname and security_protocol"
                ) from error
        channel = _Channel(sock, where)
        channel.call(ApiVersionsRequest(version=0), protocol)
        if protocol not in SASL_PROTOCOLS:
            return
        name = options["sasl_mechanism"]
        handshake = channel.call(SaslHandshakeRequest(version=1, mechanism=name), protocol)
        if handshake.error_code:
            raise PreflightError(
                f"{where} does not offer SASL {name} (it offers {handshake.mechanisms}):"
                " check kafka_options.sasl_mechanism"
            )
        user = options.get("sasl_plain_username")
        mechanism = get_sasl_mechanism(name)(host=host, **options)
        while not mechanism.is_done():
            answer = channel.call(
                SaslAuthenticateRequest(version=1, auth_bytes=mechanism.auth_bytes()), protocol
            )
            if answer.error_code:
                raise PreflightError(
                    f"{where} rejected the SASL credentials of user {user!r} ({name}):"
                    f" check {PASSWORD_SETTING} / kafka_options.sasl_plain_username"
                    f" (broker: {answer.error_message})"
                )
            mechanism.receive(answer.auth_bytes)
        if not mechanism.is_authenticated():
            raise PreflightError(
                f"{where} could not be verified as the server for user {user!r} ({name})"
            )


class _Channel:
    """Blocking request/response on one socket with kafka-python's framing."""

    def __init__(self, sock: socket.socket, where: str) -> None:
        self.sock = sock
        self.where = where
        self.parser = KafkaProtocol(client_id="recstream-preflight")

    def call(self, request: Any, protocol: str) -> Any:
        self.parser.send_request(request)
        self.sock.sendall(self.parser.send_bytes())
        while True:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, ssl.SSLError, ConnectionResetError) as error:
                data, reason = b"", str(error) or "timed out"
            else:
                reason = "closed the connection"
            if not data:
                raise PreflightError(
                    f"{self.where} {reason} on a {protocol} request: is that the listener of"
                    " this protocol? check kafka_options.security_protocol and --bootstrap"
                )
            responses = self.parser.receive_bytes(data)
            if responses:
                return responses[0][1]


def _only(client: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in options.items() if name in client.DEFAULT_CONFIG}


def _check_access(
    bootstrap: str | Sequence[str],
    options: Mapping[str, Any],
    read: list[str],
    write: list[str],
    group: str | None,
) -> None:
    user = options.get("sasl_plain_username") or "ANONYMOUS"
    grant = f"grant it in the broker's ACLs (kafka-acls --add --allow-principal User:{user} ...)"
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="recstream-preflight",
            request_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
            **_only(KafkaAdminClient, options),
        )
    except KafkaError as error:
        raise PreflightError(
            f"Kafka admin connection failed ({error}): check --bootstrap"
        ) from error
    try:
        topics = {topic["name"]: topic for topic in admin.describe_topics(sorted({*read, *write}))}
        for names, operation in ((read, "READ"), (write, "WRITE")):
            for name in names:
                topic = topics[name]
                if topic["error_code"] == TOPIC_AUTHORIZATION_FAILED:
                    raise PreflightError(
                        f"Kafka user {user!r} may not describe topic {name!r}: {grant}"
                    )
                allowed = topic.get("authorized_operations")
                if topic["error_code"] == 0 and allowed is not None and operation not in allowed:
                    raise PreflightError(
                        f"Kafka user {user!r} may not {operation.lower()} topic {name!r}: {grant}"
                    )
        if group is not None:
            _check_group(admin, group, user, grant)
    except KafkaError as error:
        raise PreflightError(f"Kafka refused a metadata request ({error})") from error
    finally:
        admin.close()


def _check_group(admin: KafkaAdminClient, group: str, user: str, grant: str) -> None:
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    while True:
        try:
            described = admin.describe_groups([group], include_authorized_operations=True)
            break
        except GroupAuthorizationFailedError as error:
            raise PreflightError(
                f"Kafka user {user!r} may not use consumer group {group!r}: {grant},"
                " or change --group"
            ) from error
        except KafkaError as error:  # no coordinator yet on a fresh broker: it comes
            if not error.retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    allowed = described.get(group, {}).get("authorized_operations")
    if allowed is not None and "READ" not in allowed:
        raise PreflightError(
            f"Kafka user {user!r} may not join consumer group {group!r}: {grant}, or change --group"
        )
