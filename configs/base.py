"""Defaults shared by every training config; each config file overrides what it changes.

Sections map one-to-one onto the rooms that read them (model, mesh, data, engine, rollout, env,
reward, rl, optim, sft, checkpoint, eval, log). Keep this file short: a key lives here only if
`launch/train.py` reads it.

Every training config takes `get_config(arg)` and ends with `return base.variant(c, arg)`:
`--config=configs/X.py:smoke` is X's recipe at a size that runs on one CPU in seconds
(big_vision's runlocal; `smoke` below).
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # XLA's persistent compilation cache (launch/train.py; "" = off): a rerun on this machine loads
  # the programs that took over a second to compile instead of compiling them again.
  c.compile_cache_dir = "~/.cache/synthagent_jax/xla"

  c.model = ml_collections.ConfigDict()
  c.model.checkpoint = ""          # HF directory (config.json + safetensors + tokenizer files)
  c.model.from_scratch = False     # True: random init from the dims below (tiny runs), no checkpoint
  # Dims: used from scratch, and by --dry_run when no checkpoint is given (else config.json wins).
  c.model.family = "qwen2"         # qwen2 | qwen3
  c.model.vocab_size = 0           # 0 = the tokenizer's size
  c.model.hidden_size = 64
  c.model.intermediate_size = 192
  c.model.num_layers = 2
  c.model.num_heads = 4
  c.model.num_kv_heads = 2
  c.model.head_dim = 16
  c.model.rope_theta = 10000.0
  c.model.tie_word_embeddings = True
  c.model.max_position_embeddings = 4096
  c.model.dtype = "float32"        # compute dtype: float32 | bfloat16 (params stay float32)
  c.model.remat = "none"           # none | full | dots_saveable
  c.model.attention = "chunked"    # naive | blocked (naive per causal query block) | chunked (O(T) memory, any backend) | xla (jax.nn.dot_product_attention)
  c.model.attention_chunk = 512    # key slots per block of the chunked attention (query rows of the blocked one)
  c.model.logprob_chunk = 256      # positions per block of the learner's LM head + log-softmax
  c.model.head_fraction = 0.5      # the LM head runs at the trained positions only when they are <= this share

  c.tokenizer = "data/tokenizer"   # "" = use model.checkpoint's own tokenizer

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (1, 1, 1)         # (data, fsdp, tensor); -1 in one slot = all remaining devices
  c.mesh.rules = (                 # logical axis -> mesh axis (None: replicated)
      ("vocab", "tensor"), ("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"),
      ("kv_heads", "tensor"), ("head_dim", None),
  )
  c.mesh.coordinator_address = ""  # multi-host: host:port of process 0 ("" = single process)
  c.mesh.num_processes = 1
  c.mesh.process_id = 0
  c.mesh.device_memory_gib = 80.0  # per-device memory the plan must fit (launch.plan; 0 = unchecked)

  c.data = ml_collections.ConfigDict()
  c.data.train_file = "data/tasks/offline_train.jsonl"
  c.data.eval_file = "data/tasks/offline_eval.jsonl"
  c.data.shuffle_seed = 0
  c.data.holdout_domains = ""      # comma-separated domains never trained on (eval keeps them)
  # Share of drawn training tasks (SFT and GRPO batches) whose private id slot is renamed, with a
  # new name at every draw (employee_id -> badge_id), so its name can only be read off the tool
  # list (synthesis/aliases.py); 0 = none.
  c.data.alias_slots = 0.0

  c.engine = ml_collections.ConfigDict()
  c.engine.kind = "jax"            # jax (in-process sampler) | sglang (HTTP server pool)
  c.engine.min_batch = -1          # jax: smallest batch bucket; -1 = the step's episodes (fewer
                                   # compiled shapes as episodes finish; see docs/benchmarks.md)
  c.engine.decode_stages = 1       # jax: n > 1 shrinks the decode batch up to n - 1 times as rows
                                   # finish: the same samples, steps ~20 % faster, each compile
                                   # slower (pays in long runs; docs/benchmarks.md, session 13)
  c.engine.urls = ()               # sglang: server base URLs, round-robined
  c.engine.weights_dir = ""        # sglang: shared directory the servers read exported weights from
  c.engine.sync_dtype = "bfloat16"  # sglang: dtype of the exported weights (float32: bit-exact)
  c.engine.mem_fraction = 0.0      # share of each device reserved for co-located SGLang servers

  c.rollout = ml_collections.ConfigDict()
  c.rollout.max_turns = 6
  c.rollout.max_new_tokens = 64    # per assistant turn
  c.rollout.max_total_tokens = 1024
  c.rollout.max_tool_response_tokens = 128
  c.rollout.temperature = 1.0
  c.rollout.top_p = 1.0
  c.rollout.top_k = 0
  c.rollout.system_prompt = ""     # "" = rollout.agent_loop.DEFAULT_SYSTEM_PROMPT
  c.rollout.compact_tools = False  # shorter tool rendering for small-context policies

  c.env = ml_collections.ConfigDict()
  c.env.user = "rule"              # rule | llm
  c.env.adversarial_user = False   # llm user pushes the agent to break policy or skip steps
  c.env.tool_llm = False           # simulate unscripted tool calls with env.llm
  c.env.cache_dir = ""             # tool-simulation cache ("" = <workdir>/tool_cache)
  c.env.llm = ml_collections.ConfigDict()  # user simulator (env.user=llm) and tool simulator
  c.env.llm.base_url = ""
  c.env.llm.model = ""
  # Env var holding this endpoint's API key. A key is sent in cleartext only to https:// or a
  # loopback http:// base_url; any other http:// host is refused (llm/openai_http.py).
  c.env.llm.api_key_env = "OPENAI_API_KEY"

  c.reward = ml_collections.ConfigDict()
  c.reward.aggregation = "synthagent"   # synthagent (gated) | binary (task completed) | weighted
  # tool_called items not met still score the fraction of name + arguments the best call got right.
  c.reward.partial_credit = False
  c.reward.judge = "none"          # none (structured checks only) | jax | http
  c.reward.judge_checkpoint = ""   # judge=jax: HF directory of the in-process judge model
  c.reward.judge_llm = ml_collections.ConfigDict()
  c.reward.judge_llm.base_url = ""
  c.reward.judge_llm.model = ""
  c.reward.judge_llm.api_key_env = "OPENAI_API_KEY"  # the judge's key env var (same https rule)

  c.rl = ml_collections.ConfigDict()
  c.rl.num_steps = 10
  c.rl.tasks_per_step = 4
  c.rl.num_generations = 4         # G rollouts per task
  c.rl.advantage = "grpo"          # grpo | drgrpo | rloo
  c.rl.drop_zero_variance = True
  # DAPO dynamic sampling: draw rounds of fresh tasks until the step has tasks_per_step groups
  # with non-zero reward variance (at most dynamic_max_rounds rounds; rollout/dynamic_sampling.py).
  c.rl.dynamic_sampling = False
  c.rl.dynamic_max_rounds = 3
  c.rl.ppo_epochs = 1
  # TASKS per optimizer update, each with its num_generations rollouts (verl's
  # ppo_mini_batch_size counts prompts): updates per step = tasks_per_step / minibatch_tasks;
  # sequences per update = minibatch_tasks x num_generations (LearnerConfig.minibatch_size).
  c.rl.minibatch_tasks = 4
  c.rl.micro_batch_size = 8        # sequences per gradient-accumulation micro-step
  c.rl.clip_low = 0.2
  c.rl.clip_high = 0.28
  c.rl.dual_clip = False           # PPO dual clip: loss capped at -A * clip_ratio_c where A < 0
  c.rl.clip_ratio_c = 3.0          # verl's default; used only with dual_clip
  c.rl.agg = "token-mean"          # token-mean | seq-mean-token-mean | seq-mean-token-sum-norm
  # seq-mean-token-sum-norm's constant divisor (Dr. GRPO); 0 = rollout.max_total_tokens.
  c.rl.loss_norm_tokens = 0
  c.rl.kl_coef = 0.0
  c.rl.is_cap = 0.0                # truncated importance sampling cap (0 = off)
  # Training reward 0 for episodes that ran out of turns or context without answering
  # (rewards.advantages.zero_unfinished); evaluation always scores the plain rubric reward.
  c.rl.zero_unfinished = False
  # episode: every policy token gets its episode's advantage (GRPO). turn: each rubric item's
  # advantage goes to the turns that decide it (ask / tool-call / answer turns; rewards/credit.py).
  c.rl.credit = "episode"

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-6
  c.optim.warmup_steps = 0
  c.optim.schedule = "constant"    # constant | cosine
  c.optim.weight_decay = 0.0
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8               # Adam epsilon
  c.optim.clip_norm = 1.0

  c.sft = ml_collections.ConfigDict()
  c.sft.num_steps = 0              # 0 = no warm start
  c.sft.batch_size = 16
  c.sft.lr = 1e-4
  c.sft.schedule = "cosine"        # after min(10, num_steps / 10) warmup steps: cosine | constant

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 5
  c.checkpoint.keep = 3

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 0           # 0 = only at the end
  c.eval.num_tasks = 32
  c.eval.k = 4                     # samples per task for pass^k
  c.eval.before_sft = True         # also evaluate the initial policy (eval_init/...) before SFT
  # Outside benchmarks run at every evaluation on the current policy (evals/, docs/evals.md):
  # "SUITE[:VALUE]" with VALUE the suite's dataset or category, e.g. ("math:aime24",
  # "bfcl_multi_turn:base"); logged as bench/<suite>_<value>/<metric>.
  c.eval.suites = ()
  c.eval.suites_k = 1              # episodes per benchmark task
  c.eval.suites_limit = 0          # benchmark tasks per suite (0 = all)
  c.eval.suites_data_dir = ""      # --data_dir of launch.eval, for data no package ships

  c.log = ml_collections.ConfigDict()
  c.log.every_steps = 1
  return c


def set_published_dims(c: ml_collections.ConfigDict, *, family: str, vocab_size: int,
                       hidden_size: int, intermediate_size: int, num_layers: int, num_heads: int,
                       num_kv_heads: int, head_dim: int, rope_theta: float,
                       tie_word_embeddings: bool) -> None:
  """A released model's dims, so --dry_run plans memory without weights (a checkpoint's own
  config.json overrides them when model.checkpoint is set)."""
  c.model.update(dict(family=family, vocab_size=vocab_size, hidden_size=hidden_size,
                      intermediate_size=intermediate_size, num_layers=num_layers,
                      num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
                      rope_theta=rope_theta, tie_word_embeddings=tie_word_embeddings))


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`c` at smoke size, in place: the same recipe (engine, user and tool simulators, judge,
  rewards, losses, which phases run) on a 1-layer 32-wide model trained from scratch on the
  shipped tokenizer and tasks, one CPU device, 2 tasks x 2 rollouts, 2 steps of each phase the
  recipe has, 2 eval tasks, 2 short turns, a checkpoint every step. Only the keys set here differ
  from the full config (tests/launch/test_configs.py checks it)."""
  c.model.update(dict(checkpoint="", from_scratch=True, vocab_size=0, hidden_size=32,
                      intermediate_size=64, num_layers=1, num_heads=4, num_kv_heads=2, head_dim=8))
  c.tokenizer = "data/tokenizer"
  c.mesh.shape = (1, 1, 1)
  c.data.train_file = "data/tasks/offline_v1_train.jsonl"
  c.data.eval_file = "data/tasks/offline_v1_eval.jsonl"
  c.rollout.update(dict(max_turns=2, max_new_tokens=8,
                        max_total_tokens=min(c.rollout.max_total_tokens, 2048)))
  c.rl.update(dict(num_steps=min(c.rl.num_steps, 2), tasks_per_step=2, num_generations=2,
                   minibatch_tasks=2, micro_batch_size=4))
  c.sft.update(dict(num_steps=min(c.sft.num_steps, 2), batch_size=4))
  c.eval.update(dict(num_tasks=2, k=1, suites_limit=2))
  c.checkpoint.every_steps = 1
  return c


VARIANTS = {"smoke": smoke}


def variant(c: ml_collections.ConfigDict, arg) -> ml_collections.ConfigDict:
  """`c` as `get_config(arg)` returns it: unchanged for no arg, else VARIANTS[arg](c)."""
  if not arg:
    return c
  if arg not in VARIANTS:
    raise ValueError(f"unknown config variant {arg!r}; known: {sorted(VARIANTS)} "
                     "(--config=configs/FILE.py:VARIANT)")
  return VARIANTS[arg](c)
