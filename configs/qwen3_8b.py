"""Qwen3-8B: the largest policy we configure; FSDP x tensor parallel on 8 GPUs.

    python -m launch.train --config=configs/qwen3_8b.py \
        --config.model.checkpoint=/ckpt/Qwen3-8B \
        --config.engine.urls="('http://127.0.0.1:30000',)" \
        --config.engine.weights_dir=/shared/synthagent_weights --workdir=runs/qwen3_8b
"""

from configs import base
from configs import qwen_3b


def get_config(arg=None):
  c = qwen_3b.get_config()
  base.set_published_dims(c, family="qwen3", vocab_size=151936, hidden_size=4096,
                         intermediate_size=12288, num_layers=36, num_heads=32, num_kv_heads=8,
                         head_dim=128, rope_theta=1000000.0, tie_word_embeddings=False)
  c.mesh.shape = (1, 4, 2)         # fsdp 4 x tensor 2
  c.rl.micro_batch_size = 4         # a multiple of data x fsdp
  return base.variant(c, arg)
