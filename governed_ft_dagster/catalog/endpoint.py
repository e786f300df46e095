"""The credential endpoint of a job's driver: vended credentials served to the job's own JVMs, renewed before they end.

S3A in the driver and in every executor asks it through the project's credentials provider
(`governedft.s3a.VendedCredentialsProvider`, put in by the S3 client factory the job names), in the AWS
container-credentials format. Only the endpoint's URL and a
random token travel to the executors (in S3A's per-bucket options); the principal's secret and its OAuth token stay in
the driver, which alone talks to the catalog."""

from __future__ import annotations

import datetime as dt
import hmac
import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from governed_ft_dagster.catalog.base import RenewingCredentials

PATH_PREFIX = "/credentials/"
# The client factory and provider (governed_ft_dagster/stack/java) and their per-bucket S3A options (S3A reads
# fs.s3a.bucket.<bucket>.X as fs.s3a.X for that bucket).
CLIENT_FACTORY_CLASS = "governedft.s3a.VendedCredentialsClientFactory"
PROVIDER_URL, PROVIDER_TOKEN, PROVIDER_RENEW_WITHIN = (
    "governed-ft.credentials.url", "governed-ft.credentials.token", "governed-ft.credentials.renew-within-seconds")


@dataclass(frozen=True)
class Scope:
    """Where one table's or path's credentials are served, and the token that must come with each request."""

    url: str
    token: str = field(repr=False)


class CredentialEndpoint:
    """An HTTP server that serves each registered table's or path's current vended credentials, vending again (through
    its RenewingCredentials) whenever they come within the renewal window of their end."""

    def __init__(self, host: str = "127.0.0.1", advertised_host: str | None = None):
        self._token = secrets.token_hex(32)
        self._scopes: dict[str, RenewingCredentials] = {}
        self.failures: list[Exception] = []  # vends the catalog refused, for the job to report as the cause
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                status, body = endpoint._answer(self.path, self.headers.get("Authorization", ""))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's name
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://{_url_host(advertised_host or host)}:{self._server.server_port}{PATH_PREFIX}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="credential-endpoint", daemon=True)
        self._thread.start()

    def serve(self, renewing: RenewingCredentials) -> Scope:
        """Serve these credentials from now on, at a URL of their own."""
        scope_id = secrets.token_urlsafe(16)
        self._scopes[scope_id] = renewing
        return Scope(self.base_url + scope_id, self._token)

    def _answer(self, path: str, authorization: str) -> tuple[int, dict]:
        if not hmac.compare_digest(authorization.encode(), self._token.encode()):
            return 401, {"Code": "Unauthorized", "Message": "missing or wrong token"}
        renewing = self._scopes.get(path.removeprefix(PATH_PREFIX)) if path.startswith(PATH_PREFIX) else None
        if renewing is None:
            return 404, {"Code": "NotFound", "Message": f"no credentials are served at {path}"}
        try:
            creds = renewing.current()
        except Exception as exc:  # the catalog's refusal travels to the caller as one sentence
            self.failures.append(exc)
            return 503, {"Code": "VendFailed", "Message": " ".join(f"{type(exc).__name__}: {exc}".split())}
        if not (creds.aws_access_key_id and creds.aws_secret_access_key and creds.expiration):
            return 503, {"Code": "VendFailed", "Message": f"the catalog vended no expiring AWS credentials for "
                                                          f"{creds.location} ({creds.operation})"}
        return 200, {"AccessKeyId": creds.aws_access_key_id, "SecretAccessKey": creds.aws_secret_access_key,
                     "Token": creds.aws_session_token or "",
                     "Expiration": creds.expiration.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")
                     .replace("+00:00", "Z")}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "CredentialEndpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
