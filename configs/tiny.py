"""The embedded default: a tiny agent trained on this CPU in minutes.

    python -m launch.train --config=configs/tiny.py --workdir=runs/tiny
    python -m launch.train --config=configs/tiny.py:smoke --workdir=/tmp/smoke   # seconds

Tiny Qwen2-style decoder starting from the shipped base (data/tiny_base, pretrained by its
pretrain.py on a generated corpus to copy ids into tool calls), the shipped tokenizer
(data/tokenizer), offline-teacher tasks (data/tasks/), rule-based user simulator, structured
rubric checks, SFT warm start on the tasks' reference trajectories, then GRPO with small groups.
About 5 minutes on a quiet 2-core CPU; the learning benchmark (benchmarks/e2e_tiny.py) runs
the same recipe longer.
"""

from configs import base


def get_config(arg=None):
  c = base.base_config()
  # The shipped base: the dims below, pretrained to copy ids from the conversation into a call's
  # arguments (a from-scratch model never learns that in SFT's minutes: docs/benchmarks.md, "why
  # no tool call is ever right"). Its config.json gives the dims; the ones below are those it was
  # made with (pretrain.py builds them from this file), used by --config.model.from_scratch=True.
  c.model.checkpoint = "data/tiny_base"
  c.model.hidden_size = 128
  c.model.intermediate_size = 384
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.num_kv_heads = 2
  c.model.head_dim = 32
  c.model.max_position_embeddings = 2048
  # Sequences of <= 768 tokens: the O(T^2) scores are small, and the chunked online softmax costs
  # more than it saves on this CPU (SFT 1.62e3 vs 1.28e3 tokens/s, tiny, 12 steps, 2026-11-30).
  # The naive softmax per causal block of 128 queries skips the masked triangle: an SFT step of
  # 16 x 576 tokens 3.8 -> 3.0 s, with the head at trained positions 2.5 s (docs/benchmarks.md).
  c.model.attention = "blocked"
  c.model.attention_chunk = 128

  # The v1 offline worlds (15 intents, 1-2 calls): the tiny policy learns them in minutes. The
  # richer default sets (40 intents, 2-3 dependent calls, state-graded writes) need more than 60
  # SFT steps and 5 turns: 0.0 after SFT, 0.006 after GRPO (docs/benchmarks.md, e2e_tiny), the
  # open work of the "default run teaches" issue.
  c.data.train_file = "data/tasks/offline_v1_train.jsonl"
  c.data.eval_file = "data/tasks/offline_v1_eval.jsonl"

  # Small context: compact tool rendering and a one-line system prompt (~310 prompt tokens).
  c.rollout.compact_tools = True
  c.rollout.system_prompt = ("Use the tools. Ask the user for any missing detail. "
                             "Give the final answer inside <answer></answer>.")
  c.rollout.max_turns = 5
  c.rollout.max_new_tokens = 64
  c.rollout.max_total_tokens = 768
  # Partial credit per rubric item (any forbidden behaviour still zeroes the reward), and per
  # argument within a tool call: a denser signal than the paper's gated preset for a policy that
  # starts from scratch and copies values into arguments imperfectly.
  c.reward.aggregation = "weighted"
  c.reward.partial_credit = True
  # Those items can all be met mid-episode, so without this GRPO drifts to episodes that ask and
  # call until they run out of turns (docs/benchmarks.md, e2e_tiny run 3). The held-out
  # evaluation scores the same way (eval/rubric_reward_mean is the rubric alone).
  c.rl.zero_unfinished = True

  # From the base's SFT policy (docs/benchmarks.md, session 10; held-out reward scored as trained,
  # 162 tasks x 2): 24 steps at lr 1e-4 +0.126 +- 0.018 over SFT, 15 at 2e-4 +0.106, 24 at 5e-4
  # -0.124 (the calls collapse: the noise of 16-episode steps grows with the lr).
  c.rl.num_steps = 24
  c.rl.tasks_per_step = 4
  c.rl.num_generations = 4
  c.rl.minibatch_tasks = 4         # 4 tasks x 4 rollouts = 16 sequences: one update per step
  # One group per micro-batch: a dropped group's padding rows are then a whole micro-batch the
  # learner skips, and 4-row micro-batches run faster on this CPU than one of 16 (GRPO learner
  # 2.0-2.3 -> 1.25-1.33 s per step; SFT uses it too: docs/benchmarks.md, session 15).
  c.rl.micro_batch_size = 4
  c.optim.lr = 1e-4
  # 80 steps at a constant lr end near loss 1.1 (a 60-step cosine ended at 2.43): the policy asks
  # for the private detail in ~2/3 of held-out episodes (docs/benchmarks.md, session 8).
  c.sft.num_steps = 80
  c.sft.schedule = "constant"
  c.sft.batch_size = 16
  c.sft.lr = 3e-3
  c.checkpoint.every_steps = 5
  # 128 x k = 256 held-out episodes per phase: a paired GRPO - SFT s.e. of ~0.02 (64 episodes
  # gave ~0.03, and +0.046 on 32 tasks was +0.004 on all 162: docs/benchmarks.md, session 10).
  c.eval.num_tasks = 128
  c.eval.k = 2
  return base.variant(c, arg)  # arg "smoke": seconds-long, see base.smoke
