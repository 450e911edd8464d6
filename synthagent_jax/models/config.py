"""ModelConfig: the architecture of a Qwen2/Qwen2.5/Qwen3 decoder, and its HF config.json mapping.

Anything in a Hugging Face config that this implementation does not reproduce exactly (rope
scaling, sliding-window attention, another activation, ...) is refused with a ValueError naming
the key, so a checkpoint never loads into a model that silently computes something else.
"""

from __future__ import annotations

import dataclasses
from typing import Any

FAMILIES = ("qwen2", "qwen3")
DTYPES = ("float32", "bfloat16", "float16")
# Rematerialisation policies by name (see qwen.REMAT_POLICIES for their jax.checkpoint meaning).
REMAT_NAMES = ("none", "full", "dots", "dots_no_batch")
# Attention implementations by name (see models/attention.py): "naive" materialises the [T, S] scores,
# "chunked" is an online-softmax loop over key blocks (O(T) memory, pure JAX, any backend),
# "xla" is jax.nn.dot_product_attention with implementation=None (on jax 0.10 its XLA path, which
# materialises the scores; cuDNN flash would need implementation="cudnn", unverified here).
ATTENTION_NAMES = ("naive", "blocked", "chunked", "xla")

# HF config.json keys that do not change the forward pass of the model (training/generation
# bookkeeping, or features only used in a way this module checks explicitly below).
_IGNORED_HF_KEYS = frozenset({
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "initializer_range", "use_cache", "max_window_layers", "sliding_window",
    "bos_token_id", "eos_token_id", "pad_token_id", "return_dict", "output_hidden_states",
    "output_attentions", "torchscript", "use_bfloat16", "tie_encoder_decoder", "is_decoder",
    "is_encoder_decoder", "add_cross_attention", "chunk_size_feed_forward", "pruned_heads",
    "id2label", "label2id", "problem_type", "tokenizer_class", "prefix", "sep_token_id",
    "decoder_start_token_id", "task_specific_params", "finetuning_task", "name_or_path",
    "tf_legacy_loss", "cross_attention_hidden_size", "keys_to_ignore_at_inference",
    "bad_words_ids", "begin_suppress_tokens", "diversity_penalty", "do_sample",
    "early_stopping", "encoder_no_repeat_ngram_size", "exponential_decay_length_penalty",
    "forced_bos_token_id", "forced_eos_token_id", "length_penalty", "max_length", "min_length",
    "no_repeat_ngram_size", "num_beam_groups", "num_beams", "num_return_sequences",
    "output_scores", "remove_invalid_values", "repetition_penalty", "return_dict_in_generate",
    "suppress_tokens", "temperature", "top_k", "top_p", "typical_p",
})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture + numerics of a Qwen-family decoder.

  Attributes:
    family: "qwen2" (Qwen2/Qwen2.5: q/k/v bias) or "qwen3" (per-head q/k RMSNorm, no bias).
    vocab_size: V, rows of the embedding table.
    hidden_size: D, residual stream width.
    intermediate_size: F, SwiGLU hidden width.
    num_layers: L, decoder blocks.
    num_heads: H, query heads.
    num_kv_heads: K, key/value heads (H % K == 0; K == 1 is multi-query attention).
    head_dim: per-head width; None means hidden_size // num_heads.
    rope_theta: RoPE base frequency.
    rms_norm_eps: epsilon inside every RMSNorm.
    tie_word_embeddings: lm_head reuses the embedding table.
    dtype: compute dtype of activations and matmuls ("float32" | "bfloat16" | "float16").
    param_dtype: storage dtype of parameters (normally "float32").
    remat: rematerialisation policy per decoder layer, one of REMAT_NAMES.
    qkv_bias: q/k/v projections carry a bias (None: the family's default).
    o_bias: the output projection carries a bias (None: False).
    qk_norm: RMSNorm over head_dim on queries and keys before RoPE (None: family default).
    max_position_embeddings: longest context the checkpoint was trained for (informational,
      written back to config.json).
    bos_token_id, eos_token_id, pad_token_id: token ids copied to/from config.json.
    attention: attention implementation for full passes and prefill, one of ATTENTION_NAMES
      (single-token decode always uses attention.attend_one, which is already O(S)).
    attention_chunk: key slots per block of the "chunked" attention; query rows per block of the
      "blocked" one.
    logprob_chunk: sequence positions per block when the learner computes token log-probs from
      the final hidden states (LM head + log-softmax per block; rl/learner.token_logprobs).
    head_fraction: when at most this fraction of a learner micro-batch's positions are trained
      (its loss mask), the LM head runs at those positions only, gathered into the smallest of
      3 static sizes (this fraction, 1/2 and 1/4 of it, rl/logprobs.head_sizes) that holds
      them; above it, at every position. 0 = always every position.
  """

  family: str = "qwen2"
  vocab_size: int = 256
  hidden_size: int = 64
  intermediate_size: int = 128
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int | None = None
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = True
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str = "none"
  qkv_bias: bool | None = None
  o_bias: bool | None = None
  qk_norm: bool | None = None
  max_position_embeddings: int = 32768
  bos_token_id: int | tuple[int, ...] | None = None
  eos_token_id: int | tuple[int, ...] | None = None
  pad_token_id: int | None = None
  attention: str = "naive"
  attention_chunk: int = 512
  logprob_chunk: int = 256
  head_fraction: float = 0.5

  def __post_init__(self):
    if isinstance(self.eos_token_id, list):  # keep the config hashable (it is static in jit)
      object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
    if isinstance(self.bos_token_id, list):
      object.__setattr__(self, "bos_token_id", tuple(self.bos_token_id))
    if self.family not in FAMILIES:
      raise ValueError(f"ModelConfig.family must be one of {FAMILIES}, got {self.family!r}")
    # Resolve family defaults once so every reader sees concrete booleans.
    if self.qkv_bias is None:
      object.__setattr__(self, "qkv_bias", self.family == "qwen2")
    if self.o_bias is None:
      object.__setattr__(self, "o_bias", False)
    if self.qk_norm is None:
      object.__setattr__(self, "qk_norm", self.family == "qwen3")
    if self.head_dim is None:
      if self.num_heads > 0 and self.hidden_size % self.num_heads:
        raise ValueError(
            f"ModelConfig: hidden_size={self.hidden_size} is not divisible by "
            f"num_heads={self.num_heads}; set head_dim explicitly")
      object.__setattr__(self, "head_dim", self.hidden_size // max(self.num_heads, 1))
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                 "num_kv_heads", "head_dim", "max_position_embeddings", "attention_chunk",
                 "logprob_chunk"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
    if (isinstance(self.head_fraction, bool) or not isinstance(self.head_fraction, (int, float))
        or not 0.0 <= self.head_fraction <= 1.0):
      raise ValueError(f"ModelConfig.head_fraction must be in [0, 1], got {self.head_fraction!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"ModelConfig: num_heads={self.num_heads} must be divisible by "
          f"num_kv_heads={self.num_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"ModelConfig.head_dim must be even for RoPE, got {self.head_dim}")
    if not self.rope_theta > 0:
      raise ValueError(f"ModelConfig.rope_theta must be > 0, got {self.rope_theta}")
    if not self.rms_norm_eps > 0:
      raise ValueError(f"ModelConfig.rms_norm_eps must be > 0, got {self.rms_norm_eps}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"ModelConfig.{name} must be one of {DTYPES}, got {getattr(self, name)!r}")
    if self.remat not in REMAT_NAMES:
      raise ValueError(f"ModelConfig.remat must be one of {REMAT_NAMES}, got {self.remat!r}")
    if self.attention not in ATTENTION_NAMES:
      raise ValueError(f"ModelConfig.attention must be one of {ATTENTION_NAMES}, got "
                       f"{self.attention!r}")

  @property
  def num_groups(self) -> int:
    """Query heads per key/value head."""
    return self.num_heads // self.num_kv_heads

  def replace(self, **changes: Any) -> ModelConfig:
    return dataclasses.replace(self, **changes)

  @classmethod
  def tiny(cls, vocab_size: int = 256, family: str = "qwen2", **overrides: Any) -> ModelConfig:
    """A 2-layer, 64-wide model for tests and CPU smoke runs."""
    base = dict(family=family, vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, rope_theta=10000.0)
    base.update(overrides)
    return cls(**base)

  @classmethod
  def from_config(cls, section: Any, tokenizer: Any = None, **overrides: Any) -> ModelConfig:
    """The ModelConfig a run builds from its `config.model` section (a ConfigDict or a dict).

    Architecture: `section.checkpoint`'s config.json unless `section.from_scratch` is set or no
    checkpoint is given; otherwise the section's dims (family, hidden_size, ..., vocab_size with
    0 = the tokenizer's size; eos/pad token ids from the tokenizer when one is given). Numerics
    that are not architecture (dtype, remat, attention, attention_chunk, logprob_chunk,
    head_fraction) always
    come from the section. `overrides` replace any field last. Every launch entry point (train,
    plan, the eval of a training run) builds its ModelConfig here, so they cannot drift.

    Raises:
      ValueError: a bad value (naming the field), vocab_size 0 without a tokenizer, or a
        config.json this implementation does not reproduce. FileNotFoundError: no config.json.
    """
    get = section.get
    numerics = {k: get(k) for k in ("dtype", "remat", "attention", "attention_chunk",
                                    "logprob_chunk", "head_fraction") if get(k) is not None}
    if get("checkpoint") and not get("from_scratch", False):
      from synthagent_jax.models import hf_io  # pylint: disable=g-import-not-at-top  # imports us
      return hf_io.load_hf_config(get("checkpoint"), **{**numerics, **overrides})
    dims = {k: get(k) for k in ("family", "hidden_size", "intermediate_size", "num_layers",
                                "num_heads", "num_kv_heads", "head_dim", "rope_theta",
                                "tie_word_embeddings", "max_position_embeddings")
            if get(k) is not None}
    vocab_size = get("vocab_size", 0)
    if tokenizer is not None:
      from synthagent_jax.models import chat_format  # pylint: disable=g-import-not-at-top
      dims.update(eos_token_id=tokenizer.convert_tokens_to_ids(chat_format.IM_END),
                  pad_token_id=tokenizer.pad_token_id)
      vocab_size = vocab_size or len(tokenizer)
    if not vocab_size and "vocab_size" not in overrides:
      raise ValueError("model.vocab_size is 0 (the tokenizer's size) but no tokenizer was given")
    return cls(**{**dims, "vocab_size": vocab_size, **numerics, **overrides})

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any], **overrides: Any) -> ModelConfig:
    """Builds a config from a Hugging Face config.json dict (Qwen2/Qwen2.5/Qwen3).

    Args:
      d: the parsed config.json.
      **overrides: fields not stored in config.json (dtype, param_dtype, remat).

    Raises:
      ValueError: naming the key, for any setting this implementation does not reproduce.
    """
    d = dict(d)
    family = d.pop("model_type", None)
    if family not in FAMILIES:
      raise ValueError(f"config.json: model_type={family!r} is not supported (expected one of "
                       f"{FAMILIES})")
    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads")
    missing = [k for k in required if k not in d]
    if missing:
      raise ValueError(f"config.json: missing required keys {missing}")

    hidden_act = d.pop("hidden_act", "silu")
    if hidden_act != "silu":
      raise ValueError(f"config.json: hidden_act={hidden_act!r} is not supported (only 'silu')")
    if d.pop("use_sliding_window", False):
      raise ValueError("config.json: use_sliding_window=true is not supported (full attention only)")
    layer_types = d.pop("layer_types", None)
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
      raise ValueError(f"config.json: layer_types={layer_types!r} is not supported "
                       "(only 'full_attention' layers)")
    dropout = d.pop("attention_dropout", 0.0)
    if dropout:
      raise ValueError(f"config.json: attention_dropout={dropout} is not supported (only 0.0)")
    rope_theta = _pop_rope_theta(d)

    if family == "qwen2":
      qkv_bias, o_bias = True, False
      if "attention_bias" in d:
        raise ValueError("config.json: attention_bias is not a qwen2 setting (qwen2 always has "
                         "q/k/v bias and no o_proj bias)")
      head_dim = d.pop("head_dim", None)
    else:
      attention_bias = bool(d.pop("attention_bias", False))
      qkv_bias, o_bias = attention_bias, attention_bias
      head_dim = d.pop("head_dim", 128)  # transformers' Qwen3Config default

    kwargs = dict(
        family=family,
        vocab_size=d.pop("vocab_size"),
        hidden_size=d.pop("hidden_size"),
        intermediate_size=d.pop("intermediate_size"),
        num_layers=d.pop("num_hidden_layers"),
        num_heads=d.pop("num_attention_heads"),
        num_kv_heads=d.pop("num_key_value_heads", None),
        head_dim=head_dim,
        rope_theta=float(rope_theta),
        rms_norm_eps=float(d.pop("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(d.pop("tie_word_embeddings", False)),
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        qk_norm=family == "qwen3",
        max_position_embeddings=d.pop("max_position_embeddings", 32768),
        bos_token_id=d.get("bos_token_id"),
        eos_token_id=d.get("eos_token_id"),
        pad_token_id=d.get("pad_token_id"),
    )
    if kwargs["num_kv_heads"] is None:
      kwargs["num_kv_heads"] = kwargs["num_heads"]
    unknown = sorted(k for k in d if k not in _IGNORED_HF_KEYS and not k.startswith("_"))
    if unknown:
      raise ValueError(f"config.json: unsupported keys {unknown} (this implementation does not "
                       "know what they change)")
    kwargs.update(overrides)
    return cls(**kwargs)

  def to_hf_dict(self) -> dict[str, Any]:
    """The config.json dict transformers needs to rebuild this architecture."""
    if self.family == "qwen2":
      if not self.qkv_bias or self.o_bias or self.qk_norm:
        raise ValueError("to_hf_dict: qwen2 in transformers always has q/k/v bias, no o bias and "
                         "no qk_norm; this config differs")
      arch, extra = "Qwen2ForCausalLM", {}
    else:
      if self.qkv_bias != self.o_bias or not self.qk_norm:
        raise ValueError("to_hf_dict: qwen3 in transformers has one attention_bias flag for "
                         "q/k/v/o and always qk_norm; this config differs")
      arch, extra = "Qwen3ForCausalLM", {"attention_bias": bool(self.qkv_bias)}
    d = {
        "architectures": [arch],
        "model_type": self.family,
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "num_key_value_heads": self.num_kv_heads,
        "head_dim": self.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": self.max_position_embeddings,
        "rms_norm_eps": self.rms_norm_eps,
        "rope_theta": self.rope_theta,
        "rope_scaling": None,
        "tie_word_embeddings": self.tie_word_embeddings,
        "use_sliding_window": False,
        "sliding_window": None,
        "attention_dropout": 0.0,
        "bos_token_id": _jsonable(self.bos_token_id),
        "eos_token_id": _jsonable(self.eos_token_id),
        "pad_token_id": self.pad_token_id,
        "torch_dtype": "float32" if self.param_dtype == "float32" else self.param_dtype,
        "use_cache": True,
    }
    d.update(extra)
    return d


def _pop_rope_theta(d: dict[str, Any]) -> float:
  """Reads rope_theta from either the classic keys or transformers>=5 `rope_parameters`."""
  theta = d.pop("rope_theta", None)
  for key in ("rope_scaling", "rope_parameters"):
    params = d.pop(key, None)
    if params is None:
      continue
    if not isinstance(params, dict):
      raise ValueError(f"config.json: {key}={params!r} is not supported")
    params = dict(params)
    rope_type = params.pop("rope_type", params.pop("type", "default"))
    if rope_type != "default":
      raise ValueError(f"config.json: {key}.rope_type={rope_type!r} is not supported (only plain "
                       "RoPE, no scaling)")
    if "rope_theta" in params:
      inner = params.pop("rope_theta")
      if theta is not None and float(theta) != float(inner):
        raise ValueError(f"config.json: rope_theta={theta} disagrees with {key}.rope_theta={inner}")
      theta = inner
    if params.get("partial_rotary_factor", 1.0) == 1.0:
      params.pop("partial_rotary_factor", None)
    if params:
      raise ValueError(f"config.json: {key} keys {sorted(params)} are not supported")
  return 10000.0 if theta is None else float(theta)


def _jsonable(token_id):
  return list(token_id) if isinstance(token_id, tuple) else token_id
