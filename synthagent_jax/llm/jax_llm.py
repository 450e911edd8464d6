"""In-process chat backend: our model behind an `inference.Engine`, prompts built with a HF
tokenizer's chat template (`models.chat_format`). Token-level: the engine sees ids only."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from synthagent_jax.inference.engine import Engine, SamplingParams
from synthagent_jax.llm.base import Message
from synthagent_jax.models import chat_format


class JaxChatLLM:
  """An `LLM` over any `Engine` (the JAX sampler in-process, or SGLang).

  Args:
    engine: turns prompt ids into completions.
    tokenizer: HF tokenizer with a chat template (e.g. `AutoTokenizer.from_pretrained("data/tokenizer")`).
    sampling: default sampling when `chat` gets none.
    stop_tokens: token strings that end a reply; added to every request's `stop_token_ids` and
      stripped from the end of the reply text.
  """

  def __init__(self, engine: Engine, tokenizer, sampling: SamplingParams | None = None,
               stop_tokens: Sequence[str] = (chat_format.IM_END, chat_format.ENDOFTEXT)):
    self.engine = engine
    self.tokenizer = tokenizer
    self.sampling = sampling or SamplingParams(max_new_tokens=256, temperature=0.0)
    self.stop_ids = tuple(chat_format.token_id(tokenizer, t) for t in stop_tokens)

  def prompt_ids(self, conversation: Sequence[Message]) -> list[int]:
    return chat_format.render_prompt_ids(self.tokenizer, list(conversation))

  def chat(self, conversations: Sequence[Sequence[Message]],
           sampling: SamplingParams | None = None) -> list[str]:
    if not conversations:
      return []
    sampling = sampling or self.sampling
    stops = tuple(dict.fromkeys(tuple(sampling.stop_token_ids) + self.stop_ids))
    sampling = dataclasses.replace(sampling, stop_token_ids=stops)
    prompts = [self.prompt_ids(c) for c in conversations]
    completions = self.engine.generate(prompts, sampling)
    if len(completions) != len(prompts):
      raise RuntimeError(f"engine returned {len(completions)} completions for {len(prompts)} "
                         "prompts")
    texts = []
    for comp in completions:
      ids = list(comp.token_ids)
      if ids and comp.finish_reason == "stop" and ids[-1] in stops:
        ids = ids[:-1]
      texts.append(self.tokenizer.decode(ids, skip_special_tokens=False))
    return texts
