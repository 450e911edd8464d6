"""Serve a JAX policy over HTTP: OpenAI chat completions + SGLang's native API.

    python -m launch.serve --checkpoint=/ckpt/policy_step_000100 --tokenizer=data/tokenizer
    SYNTHAGENT_API_KEY=... python -m launch.serve --checkpoint=DIR --host=0.0.0.0 --port=30000

Endpoints, limits and safety rules: `synthagent_jax/inference/server.py`. This file holds the
flags, their checks and the wiring (the tool-call parser comes from `rollout.turns`). Binds
127.0.0.1 unless --host says otherwise; with an API key (--api_key or SYNTHAGENT_API_KEY, the
env var keeps it out of `ps`), every endpoint but /health needs `Authorization: Bearer KEY`,
and weight updates are enabled. SIGTERM fails queued requests and exits within
--shutdown_timeout_s.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

from absl import app as absl_app
from absl import flags
import uvicorn

from synthagent_jax.inference import server
from synthagent_jax.rollout import turns


def tool_calls_from_text(text: str) -> tuple[str | None, list[tuple[str, dict]]]:
  """The server's tool parser: (content, [(name, arguments)]) of one generated turn (Qwen/Hermes
  `<tool_call>` blocks, parsed by `rollout.turns.parse_turn`; malformed blocks stay text)."""
  turn = turns.parse_turn(text)
  if turn.kind != "tool_calls" or not turn.calls:
    return text, []
  return turn.content, [(c.name, c.arguments) for c in turn.calls]


def _config() -> server.ServerConfig:
  """ServerConfig from the flags; a bad value is a UsageError naming the flag."""
  api_key = _API_KEY.value or os.environ.get("SYNTHAGENT_API_KEY") or None
  if _MODEL_ROOT.value is not None and not os.path.isdir(_MODEL_ROOT.value):
    raise absl_app.UsageError(f"--model_root={_MODEL_ROOT.value} is not a directory")
  origins = tuple(o.strip().rstrip("/") for o in _ALLOWED_ORIGINS.value or () if o.strip())
  try:
    limits = server.Limits(
        max_new_tokens=_MAX_NEW_TOKENS.value, default_max_tokens=_DEFAULT_MAX_TOKENS.value,
        context_len=_CONTEXT_LEN.value, max_prompts=_MAX_PROMPTS.value,
        max_body_bytes=_MAX_BODY_BYTES.value, max_pending=_MAX_PENDING.value,
        watchdog_s=_WATCHDOG_S.value)
    return server.ServerConfig(
        api_key=api_key, model_root=_MODEL_ROOT.value, allowed_origins=origins,
        dtype=_DTYPE.value, max_batch_size=_MAX_BATCH.value,
        batch_wait_s=_BATCH_WAIT_MS.value / 1000, limits=limits)
  except ValueError as e:
    raise absl_app.UsageError(str(e)) from e


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise absl_app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _CHECKPOINT.value:
    raise absl_app.UsageError("--checkpoint=DIR is required (a Hugging Face model directory)")
  if _SHUTDOWN_TIMEOUT_S.value < 0:
    raise absl_app.UsageError("--shutdown_timeout_s must be >= 0")
  config = _config()
  tokenizer_dir = _TOKENIZER.value
  if tokenizer_dir is None and os.path.isfile(os.path.join(_CHECKPOINT.value,
                                                           "tokenizer_config.json")):
    tokenizer_dir = _CHECKPOINT.value
  if tokenizer_dir is None:
    logging.warning("no tokenizer (--tokenizer unset and none in the checkpoint): only /generate "
                    "with input_ids is available")
  if config.api_key is None:
    logging.warning("no API key (--api_key / SYNTHAGENT_API_KEY): weight updates are disabled "
                    "and anyone who can reach %s:%d can generate", _HOST.value, _PORT.value)
  api = server.build_app(_CHECKPOINT.value, tokenizer_dir, config,
                         tool_parser=tool_calls_from_text)
  logging.info("serving %s on http://%s:%d", _CHECKPOINT.value, _HOST.value, _PORT.value)
  uvicorn.run(api, host=_HOST.value, port=_PORT.value, log_level="info",
              timeout_graceful_shutdown=_SHUTDOWN_TIMEOUT_S.value)


def _define_flags():
  """Flags of this entry point, defined only when it runs as __main__, so tests (and other
  launch modules) can import it without a second --config."""
  global _CHECKPOINT, _TOKENIZER, _HOST, _PORT, _DTYPE, _MAX_BATCH, _BATCH_WAIT_MS  # pylint: disable=global-statement
  global _API_KEY, _MODEL_ROOT, _ALLOWED_ORIGINS, _MAX_NEW_TOKENS, _DEFAULT_MAX_TOKENS  # pylint: disable=global-statement
  global _CONTEXT_LEN, _MAX_PROMPTS, _MAX_BODY_BYTES, _MAX_PENDING, _WATCHDOG_S  # pylint: disable=global-statement
  global _SHUTDOWN_TIMEOUT_S  # pylint: disable=global-statement
  d = server.Limits()
  _CHECKPOINT = flags.DEFINE_string("checkpoint", None, "HF checkpoint directory to serve.")
  _TOKENIZER = flags.DEFINE_string("tokenizer", None,
                                   "Tokenizer directory (default: the checkpoint's own).")
  _HOST = flags.DEFINE_string("host", "127.0.0.1", "Interface to bind (0.0.0.0 exposes it).")
  _PORT = flags.DEFINE_integer("port", 30000, "TCP port.")
  _DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
  _MAX_BATCH = flags.DEFINE_integer("max_batch_size", 64, "Prompts per engine call at most.")
  _BATCH_WAIT_MS = flags.DEFINE_float("batch_wait_ms", 5.0,
                                      "Wait this long for more requests before generating.")
  _API_KEY = flags.DEFINE_string(
      "api_key", None, "Require 'Authorization: Bearer KEY' on every endpoint but /health and "
      "enable weight updates (default: $SYNTHAGENT_API_KEY; prefer the env var, flags show in ps).")
  _MODEL_ROOT = flags.DEFINE_string(
      "model_root", None, "Weight updates load only checkpoints under this directory "
      "(default: the parent of --checkpoint).")
  _ALLOWED_ORIGINS = flags.DEFINE_list(
      "allowed_origins", [], "Browser Origins allowed to call the server; any other Origin "
      "header gets 403.")
  _MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", d.max_new_tokens,
                                         "Cap on a request's max_new_tokens / max_tokens.")
  _DEFAULT_MAX_TOKENS = flags.DEFINE_integer(
      "default_max_tokens", d.default_max_tokens, "Chat completion tokens when a request names "
      "none.")
  _CONTEXT_LEN = flags.DEFINE_integer(
      "context_len", None, "Prompt + new tokens at most (default: the model's "
      "max_position_embeddings).")
  _MAX_PROMPTS = flags.DEFINE_integer("max_prompts", d.max_prompts,
                                      "Prompts in one /generate request at most.")
  _MAX_BODY_BYTES = flags.DEFINE_integer("max_body_bytes", d.max_body_bytes,
                                         "Request body size limit (413 beyond).")
  _MAX_PENDING = flags.DEFINE_integer("max_pending", d.max_pending,
                                      "Prompts waiting or generating at once (503 beyond).")
  _WATCHDOG_S = flags.DEFINE_float(
      "watchdog_s", d.watchdog_s, "/health answers 503 once one engine call has run longer.")
  _SHUTDOWN_TIMEOUT_S = flags.DEFINE_integer(
      "shutdown_timeout_s", 5, "On SIGTERM, wait this long for in-flight requests, then cancel "
      "them and exit.")


if __name__ == "__main__":
  _define_flags()
  absl_app.run(main)
