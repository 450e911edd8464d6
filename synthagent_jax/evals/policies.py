"""The policy an evaluation runs, from a `--policy` spec: an Engine (or one per task), its
tokenizer, and its context budget.

    checkpoint:PATH          in-process JAX sampler (inference/sampler.JaxEngine) over
                             - a Hugging Face checkpoint directory (config.json + *.safetensors), or
                             - a training workdir W (its latest W/checkpoints/rl/<step>; the model
                               dims from W/config.json), W/checkpoints/rl, W/checkpoints/rl/<step>
                               (or checkpoints/sft/<step>)
    PATH                     a bare existing directory is checkpoint:PATH
    sglang:URL[,URL]         SGLang servers (inference/sglang.SGLangEngine; our launch.serve too)
    openai:BASE_URL:MODEL    any OpenAI-compatible chat endpoint (evals/openai_engine.py)
    oracle | null            evals/replay.ReplayEngine with suite.oracle_turns(task) / no turns
                             (one engine per task: `Policy.per_task`)

The tokenizer is `--tokenizer` when given, else the checkpoint's own (HF directory), else the
training run's `tokenizer` (a workdir), else the shipped data/tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Any, Callable, Sequence

from synthagent_jax.evals.openai_engine import OpenAIChatEngine

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_TOKENIZER = os.path.join(_ROOT, "data", "tokenizer")
SPEC_HELP = ("checkpoint:PATH | PATH | sglang:URL[,URL] | openai:BASE_URL:MODEL | oracle | null")
_URL_RE = re.compile(r"^(https?://)([^/\s]*)(.*)$")


class PolicyError(ValueError):
  """A bad --policy spec or an unreachable policy; the message is one line for the user."""


@dataclasses.dataclass
class Policy:
  """What the runner needs of a policy.

  Attributes:
    spec: the --policy string.
    kind: checkpoint | sglang | openai | oracle | null.
    tokenizer: the HF tokenizer whose chat template the policy speaks.
    engine_for: task -> Engine. The same engine for every task, except replay policies.
    per_task: run one task per AgentLoop.run (replay engines script one task).
    max_context: the policy's context length when known (caps the loop's max_total_tokens).
    chat_llm: () -> llm.LLM over the same model (`--user=policy`), or None when it has none.
  """

  spec: str
  kind: str
  tokenizer: Any
  engine_for: Callable[[Any], Any]
  per_task: bool = False
  max_context: int | None = None
  chat_llm: Callable[[], Any] | None = None
  close: Callable[[], None] = lambda: None


# ---- spec parsing -------------------------------------------------------------------------------
def parse_spec(spec: str) -> tuple[str, str]:
  """(kind, argument) of a --policy spec; raises PolicyError naming the problem."""
  spec = (spec or "").strip()
  if not spec:
    raise PolicyError(f"--policy is empty; use {SPEC_HELP}")
  if spec in ("oracle", "null"):
    return spec, ""
  kind, sep, arg = spec.partition(":")
  if sep and kind == "checkpoint":
    if not arg:
      raise PolicyError("--policy=checkpoint: needs a path (checkpoint:PATH)")
    return "checkpoint", arg
  if sep and kind == "sglang":
    urls = [u.strip() for u in arg.split(",") if u.strip()]
    if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
      raise PolicyError(f"--policy={spec!r}: sglang needs http(s) URLs (sglang:URL[,URL])")
    return "sglang", ",".join(urls)
  if sep and kind == "openai":
    split_openai(arg, what=f"--policy={spec!r}")
    return "openai", arg
  if os.path.isdir(spec):
    return "checkpoint", spec
  raise PolicyError(f"--policy={spec!r} is neither a known kind nor an existing directory; use "
                    f"{SPEC_HELP}")


# ---- tokenizers ---------------------------------------------------------------------------------
def load_tokenizer(path: str):
  import transformers  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(path):
    raise PolicyError(f"tokenizer directory {path!r} does not exist")
  try:
    tok = transformers.AutoTokenizer.from_pretrained(path)
  except Exception as e:  # pylint: disable=broad-except  # a bad directory: one line
    raise PolicyError(f"cannot load a tokenizer from {path!r}: {e.__class__.__name__}") from None
  if tok.chat_template is None:
    raise PolicyError(f"tokenizer at {path!r} has no chat template")
  return tok


# ---- checkpoints --------------------------------------------------------------------------------
def _is_hf_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, "config.json")) and any(
      n.endswith(".safetensors") or n == "model.safetensors.index.json" for n in os.listdir(path))


def resolve_run_checkpoint(path: str) -> tuple[str, str, int]:
  """(workdir, phase directory, step) of a training workdir / phase dir / step dir."""
  path = os.path.abspath(path.rstrip("/"))
  parts = path.split(os.sep)
  if parts[-1].isdigit() and len(parts) >= 3 and parts[-3] == "checkpoints":
    return os.sep.join(parts[:-3]), os.sep.join(parts[:-1]), int(parts[-1])
  if len(parts) >= 2 and parts[-2] == "checkpoints":
    workdir, phase_dir = os.sep.join(parts[:-2]), path
  else:
    workdir, phase_dir = path, os.path.join(path, "checkpoints", "rl")
  if not os.path.isdir(phase_dir):
    raise PolicyError(f"{path!r} is neither a Hugging Face checkpoint (config.json + "
                      "*.safetensors) nor a training workdir (checkpoints/rl/<step>)")
  steps = sorted(int(n) for n in os.listdir(phase_dir)
                 if n.isdigit() and os.path.isdir(os.path.join(phase_dir, n, "state")))
  if not steps:
    raise PolicyError(f"{phase_dir} holds no finished checkpoint")
  return workdir, phase_dir, steps[-1]


def run_model_config(run_config: dict, tokenizer):
  """The ModelConfig a training run built (models.ModelConfig.from_config, as launch.train)."""
  from synthagent_jax import models  # pylint: disable=g-import-not-at-top
  return models.ModelConfig.from_config(run_config["model"], tokenizer)


def restore_run_params(phase_dir: str, step: int, model_cfg):
  """(graphdef, params) of a training checkpoint: only the params of the saved TrainState."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from synthagent_jax.rl import state as state_lib  # pylint: disable=g-import-not-at-top
  graphdef, abs_params, _ = state_lib.abstract_params(model_cfg)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abs_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            abs_params)
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)  # orbax warns about the items we do not restore
  try:
    manager = ocp.CheckpointManager(phase_dir, item_names=("state",))
    params_only = os.path.basename(phase_dir) == "ref"  # checkpoints/ref holds bare params
    item = abs_params if params_only else {"params": abs_params}
    out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True)))
    manager.close()
  except Exception as e:  # pylint: disable=broad-except  # wrong dims / corrupt: one line
    raise PolicyError(f"cannot restore the params of {phase_dir}/{step}: "
                      f"{e.__class__.__name__}: {str(e).splitlines()[0][:300]}") from None
  finally:
    absl_logger.setLevel(level)
  return graphdef, (out.state if params_only else out.state["params"])


def _checkpoint_policy(spec: str, path: str, tokenizer_dir: str | None, dtype: str) -> Policy:
  from synthagent_jax import models  # pylint: disable=g-import-not-at-top
  from synthagent_jax.inference.sampler import JaxEngine  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise PolicyError(f"checkpoint path {path!r} does not exist")
  if _is_hf_dir(path):
    tok_dir = tokenizer_dir or (path if os.path.isfile(os.path.join(path, "tokenizer_config.json"))
                                else DEFAULT_TOKENIZER)
    tok = load_tokenizer(tok_dir)
    try:
      model = models.from_pretrained(path, dtype=dtype)
    except (ValueError, OSError, KeyError) as e:
      raise PolicyError(f"cannot load the checkpoint {path!r}: {e}") from None
    max_context = model.config.max_position_embeddings
    engine = JaxEngine(model)
  else:
    workdir, phase_dir, step = resolve_run_checkpoint(path)
    config_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(config_path):
      raise PolicyError(f"{workdir} has no config.json (the training run's config with the model "
                        "dims)")
    with open(config_path) as f:
      run_config = json.load(f)
    run_tok = run_config.get("tokenizer") or run_config["model"].get("checkpoint")
    if run_tok and not os.path.isabs(run_tok) and not os.path.isdir(run_tok):
      run_tok = os.path.join(_ROOT, run_tok)  # a path relative to the repository
    tok = load_tokenizer(tokenizer_dir or run_tok or DEFAULT_TOKENIZER)
    model_cfg = run_model_config(run_config, tok)
    engine = JaxEngine(restore_run_params(phase_dir, step, model_cfg))
    max_context = model_cfg.max_position_embeddings
    logging.getLogger("synthagent_jax.eval").info("policy %s: %s step %d", spec, phase_dir, step)

  def chat_llm():
    from synthagent_jax.llm.jax_llm import JaxChatLLM  # pylint: disable=g-import-not-at-top
    return JaxChatLLM(engine, tok)

  return Policy(spec, "checkpoint", tok, lambda task: engine, max_context=max_context,
                chat_llm=chat_llm)


# ---- HTTP policies ------------------------------------------------------------------------------
def _probe(url: str, what: str, timeout_s: float = 5.0) -> None:
  """Fails with one line when nothing answers at `url` (connection refused, DNS, timeout)."""
  import httpx  # pylint: disable=g-import-not-at-top
  try:
    httpx.get(url, timeout=timeout_s)
  except httpx.TransportError as e:
    raise PolicyError(f"cannot reach the {what} at {url}: {e.__class__.__name__}: "
                      f"{str(e)[:200]}") from None


def _sglang_policy(spec: str, urls: str, tokenizer_dir: str | None) -> Policy:
  from synthagent_jax.inference.sglang import SGLangEngine  # pylint: disable=g-import-not-at-top
  url_list = urls.split(",")
  for url in url_list:
    _probe(url.rstrip("/") + "/health", "SGLang server")
  tok = load_tokenizer(tokenizer_dir or DEFAULT_TOKENIZER)
  engine = SGLangEngine(url_list, max_retries=2)
  try:
    engine.wait_healthy(timeout_s=60.0)
  except TimeoutError as e:
    engine.close()
    raise PolicyError(str(e)) from None

  def chat_llm():
    from synthagent_jax.llm.jax_llm import JaxChatLLM  # pylint: disable=g-import-not-at-top
    return JaxChatLLM(engine, tok)

  return Policy(spec, "sglang", tok, lambda task: engine, chat_llm=chat_llm, close=engine.close,
                max_context=_served_context(url_list))


def _served_context(urls: Sequence[str]) -> int | None:
  """The smallest context length the servers report (our launch.serve's /get_model_info, SGLang's
  /get_server_info `context_length`), so the loop ends an episode that outgrows it as
  context_full instead of sending a prompt the server refuses; None when none reports one (then
  rollout.max_total_tokens must fit the served model)."""
  import httpx  # pylint: disable=g-import-not-at-top
  found = []
  headers = {}
  key = os.environ.get("SGLANG_API_KEY")
  if key:
    headers["Authorization"] = f"Bearer {key}"
  for url in urls:
    for path in ("/get_model_info", "/get_server_info"):
      try:
        body = httpx.get(url.rstrip("/") + path, timeout=10.0, headers=headers).json()
      except (httpx.HTTPError, ValueError):
        continue
      value = body.get("context_length") if isinstance(body, dict) else None
      if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        found.append(value)
        break
  return min(found) if found else None


def split_openai(arg: str, what: str = "") -> tuple[str, str]:
  """(base_url, model) of "BASE_URL:MODEL". The URL's path ends at the first ':' after the host
  (so a model name may hold '/' and ':'); without a path, host[:port]:MODEL."""
  error = PolicyError(f"{what or repr(arg)}: expected openai:BASE_URL:MODEL, e.g. "
                      "openai:http://127.0.0.1:8000/v1:my-model")
  match = _URL_RE.match(arg)
  if not match:
    raise error
  scheme, netloc, tail = match.groups()
  if tail:  # a path: the model follows its first ':'
    path, sep, model = tail.partition(":")
    url = scheme + netloc + path
  else:
    parts = netloc.split(":")
    cut = 2 if len(parts) >= 3 and parts[1].isdigit() else 1
    url, model, sep = scheme + ":".join(parts[:cut]), ":".join(parts[cut:]), ":" * (len(parts) > cut)
  if not sep or not model.strip() or not netloc.split(":")[0] or (not tail and model.isdigit()):
    raise error
  return url, model


def _openai_policy(spec: str, arg: str, tokenizer_dir: str | None) -> Policy:
  base_url, model = split_openai(arg)
  _probe(base_url.rstrip("/") + "/models", "OpenAI-compatible endpoint")
  tok = load_tokenizer(tokenizer_dir or DEFAULT_TOKENIZER)
  engine = OpenAIChatEngine(base_url, model, tok)

  def chat_llm():
    return engine.llm

  root = base_url.rstrip("/")
  root = root[:-len("/v1")] if root.endswith("/v1") else root
  # A server that reports its context (launch.serve, SGLang) caps the loop's budget; for others
  # (hosted models) rollout.max_total_tokens must fit the model.
  return Policy(spec, "openai", tok, lambda task: engine, chat_llm=chat_llm,
                max_context=_served_context([root]))


# ---- replay policies ----------------------------------------------------------------------------
def _replay_policy(spec: str, suite: Any, tokenizer_dir: str | None) -> Policy:
  from synthagent_jax.evals.replay import ReplayEngine  # pylint: disable=g-import-not-at-top
  tok = load_tokenizer(tokenizer_dir or DEFAULT_TOKENIZER)

  def engine_for(task):
    turns = suite.oracle_turns(task) if spec == "oracle" else []
    skip = sum(m.get("role") == "assistant" for m in (getattr(task, "opening", None) or ()))
    return ReplayEngine(tok, turns, skip=skip)

  return Policy(spec, spec, tok, engine_for, per_task=True)


def make_policy(spec: str, *, suite: Any = None, tokenizer: str | None = None,
                dtype: str = "float32") -> Policy:
  """The Policy of a --policy spec (see the module docstring). Raises PolicyError."""
  kind, arg = parse_spec(spec)
  if kind in ("oracle", "null"):
    if suite is None:
      raise PolicyError(f"--policy={kind} replays a suite's turns: it needs a suite")
    return _replay_policy(kind, suite, tokenizer)
  if kind == "checkpoint":
    return _checkpoint_policy(spec, arg, tokenizer, dtype)
  if kind == "sglang":
    return _sglang_policy(spec, arg, tokenizer)
  return _openai_policy(spec, arg, tokenizer)


# ---- the user simulator's LLM (--user) ----------------------------------------------------------
USER_HELP = "openai:BASE_URL:MODEL | policy | scripted:REPLY"


def check_user_spec(spec: str | None) -> None:
  """Checks a --user spec's syntax (nothing is loaded or reached); raises PolicyError."""
  spec = (spec or "").strip()
  if not spec or spec == "policy" or spec.startswith("scripted:"):
    return
  if spec.startswith("openai:"):
    split_openai(spec[len("openai:"):], what=f"--user={spec!r}")
    return
  raise PolicyError(f"--user={spec!r}: use {USER_HELP}")


def make_user_llm(spec: str | None, policy: Policy | None = None, suite: Any = None):
  """The `llm.LLM` a suite's user simulator talks through, from a --user spec. Without a spec:
  for the oracle / null self-tests, the suite's own `selftest_user_llm()` where it has one (tau2's
  user states its scenario, then stops), else None.

    openai:BASE_URL:MODEL   any OpenAI-compatible chat endpoint (e.g. a bigger local model)
    policy                  the evaluated model itself, in-process or on its server
    scripted:REPLY          every user turn is REPLY (tests, smoke runs)
  """
  spec = (spec or "").strip()
  if not spec:
    selftest = getattr(suite, "selftest_user_llm", None)
    if policy is not None and policy.kind in ("oracle", "null") and callable(selftest):
      return selftest()
    return None
  if spec == "policy":
    if policy is None or policy.chat_llm is None:
      raise PolicyError("--user=policy needs a model policy (checkpoint, sglang or openai), not "
                        f"{policy.kind if policy else 'none'}")
    return policy.chat_llm()
  if spec.startswith("openai:"):
    from synthagent_jax.llm.openai_http import OpenAIChatLLM, OpenAIConfig  # pylint: disable=g-import-not-at-top
    base_url, model = split_openai(spec[len("openai:"):])
    _probe(base_url.rstrip("/") + "/models", "user simulator endpoint")
    return OpenAIChatLLM(OpenAIConfig(base_url=base_url, model=model))
  if spec.startswith("scripted:"):
    from synthagent_jax.llm.scripted import ScriptedLLM  # pylint: disable=g-import-not-at-top
    return ScriptedLLM(default=spec[len("scripted:"):])
  raise PolicyError(f"--user={spec!r}: use {USER_HELP}")
