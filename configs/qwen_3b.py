"""The paper's recipe at Qwen2.5-3B-Instruct (SynthAgent, "Mock Worlds, Real Skills").

The whole sequence on one 8-GPU host (the task files are not shipped: step 1 makes them):

 0. Download Qwen2.5-3B-Instruct to a local directory and start a pool of SGLang servers on it
    (docs/sglang.md), plus an OpenAI-compatible endpoint for the teacher, the user simulator and
    the judge (any of vLLM, SGLang, a hosted API; or `python -m launch.serve --checkpoint=DIR`).
 1. Synthesize the tasks with the teacher (writes data/tasks/teacher_{train,eval}.jsonl):

    python -m launch.synthesize --config=configs/synth_teacher.py --out=data/tasks/teacher.jsonl \
        --config.teacher.base_url=http://TEACHER_HOST/v1 --config.teacher.model=MODEL

 2. Train (rerun the same command to resume):

    python -m launch.train --config=configs/qwen_3b.py \
        --config.model.checkpoint=/ckpt/Qwen2.5-3B-Instruct \
        --config.engine.urls="('http://127.0.0.1:30000','http://127.0.0.1:30001')" \
        --config.engine.weights_dir=/shared/synthagent_weights \
        --config.env.llm.base_url=http://USER_SIM_HOST/v1 --config.env.llm.model=MODEL \
        --config.reward.judge_llm.base_url=http://JUDGE_HOST/v1 --config.reward.judge_llm.model=MODEL \
        --workdir=runs/qwen_3b

Weights: `model.checkpoint` is a local Hugging Face directory (config.json, *.safetensors,
tokenizer files); nothing is downloaded. Each step's policy is exported as HF safetensors to
`engine.weights_dir`, which the SGLang servers load with /update_weights_from_disk.
Plan memory without weights: add `--dry_run`.

Recipe: lr 1e-6, 64 tasks x 16 rollouts per step, mini-batches of 16 tasks (4 updates per step),
clip 0.2 / 0.28, no KL, up to 10 turns, 2048 prompt / 8192 response tokens, LLM user simulator and
HTTP rubric judge. Deviations from the paper's verl run: docs/recipe.md.
"""

from configs import base


def get_config(arg=None):
  c = base.base_config()
  c.model.checkpoint = ""          # required: set --config.model.checkpoint
  base.set_published_dims(c, family="qwen2", vocab_size=151936, hidden_size=2048,
                         intermediate_size=11008, num_layers=36, num_heads=16, num_kv_heads=2,
                         head_dim=128, rope_theta=1000000.0, tie_word_embeddings=True)
  c.model.dtype = "bfloat16"
  c.model.remat = "full"
  c.tokenizer = ""
  c.mesh.shape = (1, 8, 1)         # FSDP over the host's 8 GPUs

  c.data.train_file = "data/tasks/teacher_train.jsonl"
  c.data.eval_file = "data/tasks/teacher_eval.jsonl"

  c.engine.kind = "sglang"
  c.engine.urls = ("http://127.0.0.1:30000",)
  c.engine.weights_dir = "/tmp/synthagent_weights"

  c.rollout.max_turns = 10
  c.rollout.max_new_tokens = 2048
  c.rollout.max_total_tokens = 2048 + 8192
  c.rollout.max_tool_response_tokens = 1024

  c.env.user = "llm"
  c.env.tool_llm = True
  c.reward.judge = "http"

  c.rl.num_steps = 300
  c.rl.tasks_per_step = 64
  c.rl.num_generations = 16
  # The paper's mini-batch of 16 prompts (verl ppo_mini_batch_size=16, each with its 16
  # rollouts = 256 sequences): 64 / 16 = 4 optimizer updates per step.
  c.rl.minibatch_tasks = 16
  c.rl.micro_batch_size = 8         # a multiple of data x fsdp
  c.rl.clip_low = 0.2
  c.rl.clip_high = 0.28
  c.rl.dual_clip = True             # verl's policy loss always applies clip_ratio_c (3.0)
  c.rl.kl_coef = 0.0
  c.rl.agg = "token-mean"
  c.rl.loss_norm_tokens = 8192      # the response budget, if agg is set to seq-mean-token-sum-norm
  c.optim.lr = 1e-6
  c.optim.warmup_steps = 0
  c.checkpoint.every_steps = 10
  c.eval.every_steps = 20
  c.eval.num_tasks = 128
  return base.variant(c, arg)
