"""An Engine that replays fixed assistant turns, token-in/token-out: the oracle and null policies.

`ReplayEngine(tokenizer, turns)` answers the n-th assistant turn of an episode with `turns[n]`
encoded by the policy's tokenizer and closed by the end-of-turn token (after the last scripted
turn it repeats `after`). Like any engine it sees only token ids: it finds n by counting the
assistant headers in the prompt, less those of the task's opening messages (`skip`). One engine
replays one task (run one task per `AgentLoop.run`; its k samples replay the same turns).
"""

from __future__ import annotations

from typing import Sequence

from synthagent_jax.inference.engine import Completion, SamplingParams
from synthagent_jax.models import chat_format as cf

NULL_TURN = "<answer>I cannot help with that.</answer>"


class ReplayEngine:
  """Replays `turns` (raw assistant texts in the policy's turn format)."""

  def __init__(self, tokenizer, turns: Sequence[str], *, skip: int = 0, after: str = NULL_TURN,
               end_of_turn: str = cf.IM_END):
    self.tokenizer, self.turns, self.skip, self.after = tokenizer, list(turns), skip, after
    self.eot = cf.token_id(tokenizer, end_of_turn)
    self._header = cf.IM_START + "assistant"

  def turn_index(self, prompt_ids: Sequence[int]) -> int:
    text = self.tokenizer.decode(list(prompt_ids), skip_special_tokens=False)
    return text.count(self._header) - 1 - self.skip

  def generate(self, prompt_ids: Sequence[Sequence[int]], sampling: SamplingParams
               ) -> list[Completion]:
    out = []
    for prompt in prompt_ids:
      n = self.turn_index(prompt)
      text = self.turns[n] if 0 <= n < len(self.turns) else self.after
      ids = cf.encode(self.tokenizer, text) + [self.eot]
      finish = "stop"
      if len(ids) > sampling.max_new_tokens:
        ids, finish = ids[:sampling.max_new_tokens], "length"
      out.append(Completion(ids, [0.0] * len(ids), finish))
    return out

  def update_weights(self, weights, step: int) -> dict[str, float]:
    return {}  # replayed text has no weights

  def wait_ready(self) -> None:
    pass
