"""Qwen2.5-0.5B-Instruct: the smallest real policy; fits one GPU.

    python -m launch.train --config=configs/qwen_0_5b.py \
        --config.model.checkpoint=/path/to/Qwen2.5-0.5B-Instruct --workdir=runs/qwen_0_5b

`model.checkpoint` is a local Hugging Face directory (config.json, *.safetensors, tokenizer files);
the model's own tokenizer and chat template are used.
"""

from configs import base


def get_config(arg=None):
  c = base.base_config()
  c.model.checkpoint = ""          # required: set --config.model.checkpoint
  base.set_published_dims(c, family="qwen2", vocab_size=151936, hidden_size=896,
                         intermediate_size=4864, num_layers=24, num_heads=14, num_kv_heads=2,
                         head_dim=64, rope_theta=1000000.0, tie_word_embeddings=True)
  c.model.dtype = "bfloat16"
  c.model.remat = "full"
  c.tokenizer = ""
  c.mesh.shape = (1, -1, 1)
  c.rollout.max_turns = 10
  c.rollout.max_new_tokens = 1024
  c.rollout.max_total_tokens = 8192
  c.rollout.max_tool_response_tokens = 1024
  c.rl.num_steps = 200
  c.rl.tasks_per_step = 16
  c.rl.num_generations = 8
  c.rl.minibatch_tasks = 4         # 4 tasks x 8 rollouts = 32 sequences: 4 updates per step
  c.rl.micro_batch_size = 8         # a multiple of data x fsdp on 8 devices
  c.optim.lr = 1e-6
  c.optim.warmup_steps = 10
  c.checkpoint.every_steps = 10
  return base.variant(c, arg)
