"""Qwen3-8B: the largest policy we configure; FSDP x tensor parallel on 8 GPUs.

    python -m launch.train --config=configs/qwen3_8b.py \
        --config.model.checkpoint=/ckpt/Qwen3-8B \
        --config.engine.urls="('http://127.0.0.1:30000',)" \
        --config.engine.weights_dir=/shared/synthagent_weights --workdir=runs/qwen3_8b
"""

from configs import qwen_3b


def get_config(arg=None):
  c = qwen_3b.get_config(arg)
  c.mesh.shape = (1, 4, 2)         # fsdp 4 x tensor 2
  c.rl.micro_batch_size = 1
  return c
