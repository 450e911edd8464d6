"""Runs many agent episodes at once, token-in/token-out, against an Engine and two environments.

Per round, ONE `engine.generate` call carries the current turn of every unfinished episode, so no
episode waits for the slowest: an episode that ends drops out of the next round. Each sampled turn
is parsed (`turns.parse_turn`) and routed: tool calls -> `ToolEnv.call` (several per turn; a
malformed call becomes an error observation), a message -> `UserEnv.reply` (or one
`reply_batch(tasks, conversations)` per round for every waiting episode, when the UserEnv has it,
as envs.user.LLMUserSimulator does), an answer -> the end.

Token-in/token-out: the prompt is rendered once with the chat template; sampled tokens are kept
exactly as sampled (loss_mask 1, sampler logprob kept); environment messages are appended as
template deltas tokenized on their own (loss_mask 0). History is never re-tokenized, so the ids a
Trajectory ends with are exactly what the policy saw and what the learner trains on.

The Engine is stateless, so every round re-prefills each episode's whole history; `LoopStats`
counts those prefill tokens so their cost can be measured (benchmarks/agent_loop_throughput.py).

Per-task hooks (duck-typed, all optional; outside benchmarks use them, see `evals/`):
  task.system_prompt: replaces config.system_prompt for that task (e.g. tau2's airline policy).
  task.opening: messages placed after the system message (e.g. tau2's agent greeting "Hi! How can I
    help you today?"); with task.instruction None, the first user message is the UserEnv's reply to
    system + opening (an LLM user simulator opens the conversation).
Config hooks: `answer_to_user` routes an <answer> turn to the UserEnv like a message (BFCL sends its
next question after the agent's final reply of a turn; the user ends the episode); and
`max_steps_per_user_turn` ends an episode whose agent takes more steps than that before handing the
turn back to the user (status "max_steps", BFCL's force-termination).

A UserEnv's `stop` may be a truthy string naming what ended the conversation (tau2's "###STOP###",
"###TRANSFER###", "###OUT-OF-SCOPE###"); the Trajectory records it as `user_stop`. Each tool call
reaches the ToolEnv as a deep copy, so an environment that keeps argument objects can never alter the
recorded trajectory.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any, Sequence

from synthagent_jax.envs.base import ToolEnv, UserEnv
from synthagent_jax.inference.engine import Completion, Engine, SamplingParams
from synthagent_jax.models import chat_format as cf
# Re-exported: callers build the loop and its config from this module.
from synthagent_jax.rollout.loop_config import (DEFAULT_SYSTEM_PROMPT, AgentLoopConfig,  # noqa: F401
                                                LoopStats)
from synthagent_jax.rollout.trajectory import Trajectory, TurnRecord
from synthagent_jax.rollout.turns import Turn, parse_turn

TRUNCATION_NOTE = "\n[tool response truncated]"
INVALID_CALL_NAME = "invalid_tool_call"


@dataclasses.dataclass
class _Episode:
  task: Any
  sample_index: int
  token_ids: list[int]
  loss_mask: list[int]
  logprobs: list[float]
  prompt_len: int
  messages: list[dict]
  tool_state: Any = None
  turns: list[TurnRecord] = dataclasses.field(default_factory=list)
  status: str | None = None
  error: str | None = None
  num_tool_calls: int = 0
  truncated: int = 0
  user_stop: str | None = None
  steps_since_user: int = 0

  def append(self, ids: Sequence[int], sampled: bool, logprobs: Sequence[float] | None = None):
    self.token_ids.extend(int(i) for i in ids)
    self.loss_mask.extend([1 if sampled else 0] * len(ids))
    self.logprobs.extend([float(x) for x in logprobs] if sampled else [0.0] * len(ids))

  def finish(self, status: str, error: str | None = None):
    self.status, self.error = status, error

  def trajectory(self) -> Trajectory:
    return Trajectory(
        task_id=str(self.task.id), sample_index=self.sample_index, token_ids=self.token_ids,
        loss_mask=self.loss_mask, sampler_logprobs=self.logprobs, prompt_len=self.prompt_len,
        messages=self.messages, turns=self.turns, status=self.status, num_turns=len(self.turns),
        num_tool_calls=self.num_tool_calls, num_response_tokens=sum(self.loss_mask),
        truncated_tool_responses=self.truncated, error=self.error, user_stop=self.user_stop)


def assistant_message(turn: Turn) -> dict:
  """The decoded chat message of a turn: well-formed calls as `tool_calls`, the rest as content."""
  if not turn.calls:
    return {"role": "assistant", "content": turn.text}
  content = turn.text
  for block in turn.blocks:
    if block.call is not None:
      content = content.replace(f"{cf.TOOL_CALL_START}{block.raw}{cf.TOOL_CALL_END}", "", 1)
  return {"role": "assistant", "content": content.strip(),
          "tool_calls": [{"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                         for c in turn.calls]}


class AgentLoop:
  """Turns (tasks x samples) into Trajectories. Not thread-safe; one `run` at a time.

  Args:
    engine: any inference.Engine (the JAX sampler in-process, SGLang over HTTP, a scripted fake).
    tokenizer: the HF tokenizer whose chat template matches the policy.
    tools: ToolEnv (`new_episode(task)`, `call(task, call, state) -> str`).
    user: UserEnv (`reply(task, messages) -> (text, stop)`).
    config: AgentLoopConfig.
  Tasks are duck-typed on the Task schema: `.id`, `.instruction`, `.tools` (envs.task.Tool objects
  or dicts in the Task/OpenAI tool shape).
  """

  def __init__(self, engine: Engine, tokenizer, tools: ToolEnv, user: UserEnv,
               config: AgentLoopConfig = AgentLoopConfig()):
    self.engine, self.tokenizer, self.tools, self.user, self.config = (
        engine, tokenizer, tools, user, config)
    self.eot_id = cf.token_id(tokenizer, config.end_of_turn)
    self.stats = LoopStats()
    self._num_runs = 0

  # ---- episode setup -------------------------------------------------------------------------
  def _start(self, task: Any, sample_index: int) -> _Episode:
    system = getattr(task, "system_prompt", None) or self.config.system_prompt
    messages = [{"role": "system", "content": system}, *list(getattr(task, "opening", None) or ())]
    ep = _Episode(task, sample_index, [], [], [], 0, messages)
    if task.instruction is not None:
      self._render_prompt(ep, task.instruction)
    if ep.status is None:
      try:
        ep.tool_state = self.tools.new_episode(task)
      except Exception as e:  # pylint: disable=broad-except  # an env failure ends only this episode
        ep.finish("error", f"tools.new_episode raised {e.__class__.__name__}: {e}")
    return ep

  def _render_prompt(self, ep: _Episode, first_user_message: str):
    """Renders system + opening + the first user message once with the chat template."""
    ep.messages.append({"role": "user", "content": first_user_message})
    tools = [cf.compact_tool_schema(t) if self.config.compact_tools else t for t in ep.task.tools]
    ids = cf.render_prompt_ids(self.tokenizer, ep.messages, tools)
    ep.prompt_len = len(ids)
    ep.append(ids, sampled=False)
    if len(ids) + 2 > self.config.max_total_tokens:  # room for >= 1 sampled token + end token
      ep.finish("context_full")

  def _open(self, episodes: list[_Episode]):
    """The UserEnv writes the first user message of episodes whose task has no instruction."""
    opening = [ep for ep in episodes if ep.status is None and not ep.token_ids]
    for ep, reply in zip(opening, self._user_replies(opening)):
      text = self._check_reply(ep, reply)
      if text is None:
        continue
      if ep.status is None:
        self._render_prompt(ep, text)
      else:  # the user ended the conversation before the agent said anything
        ep.messages.append({"role": "user", "content": text})

  # ---- one sampled turn ----------------------------------------------------------------------
  def _take_turn(self, ep: _Episode, completion: Completion, budget: int) -> Turn:
    ids, lps = list(completion.token_ids[:budget]), list(completion.logprobs[:budget])
    finish = completion.finish_reason if len(completion.token_ids) <= budget else "length"
    start = len(ep.token_ids)
    ep.append(ids, sampled=True, logprobs=lps)
    if not ids or ids[-1] != self.eot_id:
      # Truncated (or stopped on another token): close the turn as the template would, untrained.
      ep.append([self.eot_id], sampled=False)
    body = ids[:-1] if ids and ids[-1] == self.eot_id else ids
    text = self.tokenizer.decode(body, skip_special_tokens=False)
    turn = parse_turn(text)
    ep.turns.append(TurnRecord(index=len(ep.turns), kind=turn.kind, start=start,
                               num_sampled=len(ids), finish_reason=finish,
                               num_calls=len(turn.calls),
                               num_call_errors=sum(b.call is None for b in turn.blocks),
                               errors=list(turn.errors)))
    ep.messages.append(assistant_message(turn))
    return turn

  # ---- the environment's answer to a turn ----------------------------------------------------
  def _observe_tools(self, ep: _Episode, turn: Turn) -> list[dict]:
    out = []
    for block in turn.blocks:
      if block.call is None:
        out.append({"role": "tool", "name": INVALID_CALL_NAME, "content": f"Error: {block.error}"})
        continue
      text = self.tools.call(ep.task, copy.deepcopy(block.call), ep.tool_state)
      if not isinstance(text, str):
        raise TypeError(f"ToolEnv.call returned {type(text).__name__}, expected str")
      ep.num_tool_calls += 1
      text = self._truncate(ep, text)
      out.append({"role": "tool", "name": block.call.name, "content": text})
    return out

  def _truncate(self, ep: _Episode, text: str) -> str:
    limit = self.config.max_tool_response_tokens
    ids = cf.encode(self.tokenizer, text)
    if len(ids) <= limit:
      return text
    ep.truncated += 1
    ep.turns[-1].truncated_tool_responses += 1
    return self.tokenizer.decode(ids[:limit], skip_special_tokens=False) + TRUNCATION_NOTE

  def _route(self, ep: _Episode, turn: Turn) -> list[dict] | None:
    """Ends the episode, or answers tool calls now (-> the tool messages), or returns None with
    the episode still running when the turn is a message waiting for the user."""
    cfg = self.config
    ep.steps_since_user += 1
    if turn.kind == "answer" and not cfg.answer_to_user:
      ep.finish("answered")
    elif len(ep.turns) >= cfg.max_turns:
      ep.finish("max_turns")
    elif turn.kind == "tool_calls":
      if cfg.max_steps_per_user_turn and ep.steps_since_user >= cfg.max_steps_per_user_turn:
        ep.finish("max_steps")
        return None
      try:
        return self._observe_tools(ep, turn)
      except Exception as e:  # pylint: disable=broad-except  # an env failure ends only this episode
        ep.finish("error", f"{e.__class__.__name__}: {e}")
    return None

  def _user_replies(self, waiting: list[_Episode]) -> list[tuple[str, bool] | Exception]:
    """One reply per waiting episode: one `reply_batch` call when the UserEnv has it (an LLM user
    then answers every episode in one batch), else `reply` per episode. If the batch call
    raises, each episode asks alone so that a failure ends only its own episode."""
    if not waiting:
      return []
    batch = getattr(self.user, "reply_batch", None)
    if callable(batch) and len(waiting) > 1:
      try:
        replies = batch([ep.task for ep in waiting], [list(ep.messages) for ep in waiting])
        if len(replies) != len(waiting):
          raise ValueError(f"UserEnv.reply_batch returned {len(replies)} replies for "
                           f"{len(waiting)} conversations")
        return list(replies)
      except Exception:  # pylint: disable=broad-except  # isolate the failing episode below
        pass
    out = []
    for ep in waiting:
      try:
        out.append(self.user.reply(ep.task, list(ep.messages)))
      except Exception as e:  # pylint: disable=broad-except
        out.append(e)
    return out

  def _check_reply(self, ep: _Episode, reply: tuple[str, Any] | Exception) -> str | None:
    """The reply's text (None after ending the episode on a bad reply); records a user stop."""
    if isinstance(reply, Exception):
      ep.finish("error", f"{reply.__class__.__name__}: {reply}")
      return None
    if not (isinstance(reply, (tuple, list)) and len(reply) == 2):
      ep.finish("error", f"UserEnv reply must be (text, stop), got {reply!r}")
      return None
    text, stop = reply
    if not isinstance(text, str):
      ep.finish("error", f"UserEnv reply text must be a str, got {type(text).__name__}")
      return None
    if stop:
      ep.user_stop = stop if isinstance(stop, str) else "stop"
      ep.finish("user_stopped")
    return text

  def _hear_user(self, ep: _Episode, reply: tuple[str, Any] | Exception) -> list[dict] | None:
    text = self._check_reply(ep, reply)
    if text is None:
      return None
    env_messages = [{"role": "user", "content": text}]
    if ep.status is not None:
      ep.messages.extend(env_messages)  # the user's last word has no tokens (nothing follows)
      return None
    ep.steps_since_user = 0
    return env_messages

  def _append_env(self, ep: _Episode, env_messages: list[dict]):
    """Appends the environment's messages as a template delta, or ends with context_full."""
    cfg = self.config
    delta = cf.render_delta_ids(self.tokenizer, env_messages, add_generation_prompt=True,
                                end_of_turn=cfg.end_of_turn)
    if len(ep.token_ids) + len(delta) + 2 > cfg.max_total_tokens:  # + >= 1 sampled + end token
      ep.finish("context_full")  # the observation never reached the policy, so it is not kept
      return
    ep.messages.extend(env_messages)
    ep.append(delta, sampled=False)
    ep.turns[-1].num_env_tokens = len(delta)

  # ---- the batched loop ----------------------------------------------------------------------
  def run(self, tasks: Sequence[Any], num_samples: int = 1, seed: int | None = None
          ) -> list[Trajectory]:
    """Runs `num_samples` episodes per task; returns Trajectories task-major (task 0's samples
    first).

    `seed` makes a run reproducible (pass e.g. the RL step, so a resumed run samples the same).
    Without it, call n of this loop uses config.seed + n, so repeated calls never repeat samples.
    """
    if num_samples < 1:
      raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    cfg = self.config
    stats = self.stats = LoopStats()
    t_start = time.perf_counter()
    base_seed = cfg.seed + self._num_runs if seed is None else seed
    self._num_runs += 1
    t0 = time.perf_counter()
    episodes = [self._start(task, g) for task in tasks for g in range(num_samples)]
    self._open(episodes)
    stats.env_s += time.perf_counter() - t0
    while True:
      active = [ep for ep in episodes if ep.status is None]
      if not active:
        break
      # One slot stays free for the end token a truncated turn is closed with.
      budgets = [min(cfg.max_new_tokens, cfg.max_total_tokens - len(ep.token_ids) - 1)
                 for ep in active]
      sampling = SamplingParams(
          max_new_tokens=max(budgets), temperature=cfg.temperature, top_p=cfg.top_p,
          top_k=cfg.top_k, stop_token_ids=(self.eot_id,),
          seed=(base_seed * 1_000_003 + stats.rounds) % (2**31))
      prompts = [list(ep.token_ids) for ep in active]
      t0 = time.perf_counter()
      completions = self.engine.generate(prompts, sampling)
      stats.generate_s += time.perf_counter() - t0
      if len(completions) != len(prompts):
        raise RuntimeError(f"engine returned {len(completions)} completions for {len(prompts)} prompts")
      stats.rounds += 1
      stats.prefill_tokens += sum(len(p) for p in prompts)
      t0 = time.perf_counter()
      answered: list[tuple[_Episode, list[dict]]] = []
      waiting: list[_Episode] = []
      for ep, completion, budget in zip(active, completions, budgets):
        turn = self._take_turn(ep, completion, budget)
        stats.sampled_tokens += ep.turns[-1].num_sampled
        out_of_room = budget < cfg.max_new_tokens and ep.turns[-1].finish_reason == "length"
        if out_of_room and turn.kind != "answer":
          ep.finish("context_full")
          continue
        tool_messages = self._route(ep, turn)
        if tool_messages is not None:
          answered.append((ep, tool_messages))
        elif ep.status is None:
          waiting.append(ep)
      for ep, reply in zip(waiting, self._user_replies(waiting)):
        user_messages = self._hear_user(ep, reply)
        if user_messages is not None:
          answered.append((ep, user_messages))
      for ep, env_messages in answered:
        self._append_env(ep, env_messages)
      stats.env_s += time.perf_counter() - t0
    stats.total_s = time.perf_counter() - t_start
    return [ep.trajectory() for ep in episodes]
