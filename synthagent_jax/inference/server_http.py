"""HTTP plumbing of the policy server, independent of what it serves (`inference/server.py`).

    Guard            ASGI middleware: foreign Origin -> 403; with an API key, every request but
                     GET /health needs `Authorization: Bearer KEY` (401), as SGLang's own
                     --api-key (which leaves /health open for load balancers and probes).
    read_json        a POST body: application/json only (415), size-limited while it is read
                     (413), parsed by `server_requests.parse_json` (400).
    BackgroundServer uvicorn in a thread of this process (tests, notebooks).
"""

from __future__ import annotations

import hmac
import socket
import threading
import time

import fastapi
from fastapi import responses
import uvicorn

from synthagent_jax.inference import server_requests as req


def error(status: int, message: str, kind: str = "invalid_request") -> responses.JSONResponse:
  """An OpenAI-style error body."""
  return responses.JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


class Guard:
  """ASGI middleware: foreign Origins -> 403, missing/wrong API key -> 401 (all but /health)."""

  def __init__(self, app, api_key: str | None, allowed_origins: tuple[str, ...]):
    self.app = app
    self.api_key = api_key
    self.allowed_origins = allowed_origins

  async def __call__(self, scope, receive, send):
    if scope["type"] != "http":
      return await self.app(scope, receive, send)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    origin = headers.get("origin")
    problem = None
    if origin is not None and origin not in self.allowed_origins:
      problem = error(403, f"requests from Origin {origin!r} are refused (a browser page cannot "
                      "drive this server; allow it with --allowed_origins)", "forbidden")
    elif self.api_key is not None and scope["path"] != "/health":  # SGLang leaves /health open
      auth = headers.get("authorization", "")
      scheme, _, key = auth.partition(" ")
      if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(),
                                                               self.api_key.encode()):
        problem = error(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                        "unauthorized")
    if problem is not None:
      return await problem(scope, receive, send)
    return await self.app(scope, receive, send)


async def read_json(request: fastapi.Request, limits: req.Limits) -> dict:
  """The body of a POST as a JSON object (415 / 413 / 400, see the module docstring)."""
  ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
  if ctype != "application/json":
    raise req.RequestError(f"the body must be application/json, got "
                           f"{ctype or 'no content type'!r}", 415)
  length = request.headers.get("content-length")
  if length is not None and (not length.isdigit() or int(length) > limits.max_body_bytes):
    raise req.RequestError(f"request body of {length} bytes exceeds the limit of "
                           f"{limits.max_body_bytes} bytes (--max_body_bytes)", 413)
  raw = bytearray()
  async for chunk in request.stream():
    raw += chunk
    if len(raw) > limits.max_body_bytes:
      raise req.RequestError(f"request body exceeds the limit of {limits.max_body_bytes} "
                             "bytes (--max_body_bytes)", 413)
  return req.parse_json(bytes(raw))


class BackgroundServer:
  """uvicorn running an app in a thread of this process (tests, notebooks)."""

  def __init__(self, api: fastapi.FastAPI, host: str = "127.0.0.1", port: int | None = None):
    self.host = host
    self.port = port or free_port(host)
    config = uvicorn.Config(api, host=host, port=self.port, log_level="warning",
                            timeout_graceful_shutdown=5)
    self.server = uvicorn.Server(config)
    self.thread = threading.Thread(target=self.server.run, daemon=True)

  @property
  def url(self) -> str:
    return f"http://{self.host}:{self.port}"

  def __enter__(self) -> BackgroundServer:
    self.thread.start()
    deadline = time.monotonic() + 60
    while not self.server.started:
      if not self.thread.is_alive() or time.monotonic() > deadline:
        raise RuntimeError(f"server on {self.url} did not start")
      time.sleep(0.02)
    return self

  def __exit__(self, *exc) -> None:
    self.server.should_exit = True
    self.thread.join(timeout=30)


def free_port(host: str = "127.0.0.1") -> int:
  """A TCP port free on `host` right now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((host, 0))
    return s.getsockname()[1]
