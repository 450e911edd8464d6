"""ModelConfig: validation and the config.json mapping (no torch)."""

import pytest

from synthagent_jax.models import ModelConfig

# The config.json of Qwen2.5-3B-Instruct as published (transformers 4.x layout).
QWEN25_3B = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
    "intermediate_size": 11008, "max_position_embeddings": 32768, "max_window_layers": 70,
    "model_type": "qwen2", "num_attention_heads": 16, "num_hidden_layers": 36,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 32768, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.1", "use_cache": True, "use_sliding_window": False,
    "vocab_size": 151936,
}
# The config.json of Qwen3-8B as published.
QWEN3_8B = {
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 12288,
    "max_position_embeddings": 40960, "max_window_layers": 36, "model_type": "qwen3",
    "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
    "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
}


def test_published_qwen25_config():
  cfg = ModelConfig.from_hf_dict(QWEN25_3B, dtype="bfloat16")
  assert (cfg.family, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads) == ("qwen2", 36, 16, 2)
  assert cfg.head_dim == 128 and cfg.rope_theta == 1e6 and cfg.tie_word_embeddings
  assert cfg.qkv_bias and not cfg.o_bias and not cfg.qk_norm
  assert cfg.dtype == "bfloat16" and cfg.param_dtype == "float32"
  assert cfg.eos_token_id == 151645


def test_published_qwen3_config():
  cfg = ModelConfig.from_hf_dict(QWEN3_8B)
  assert cfg.family == "qwen3" and cfg.head_dim == 128 and cfg.qk_norm
  assert not cfg.qkv_bias and not cfg.o_bias and not cfg.tie_word_embeddings


def test_transformers5_rope_parameters_layout():
  d = dict(QWEN3_8B)
  del d["rope_theta"], d["rope_scaling"]
  d["rope_parameters"] = {"rope_type": "default", "rope_theta": 5e5}
  d["layer_types"] = ["full_attention"] * 36
  assert ModelConfig.from_hf_dict(d).rope_theta == 5e5


@pytest.mark.parametrize("base", [QWEN25_3B, QWEN3_8B])
def test_hf_dict_round_trip(base):
  cfg = ModelConfig.from_hf_dict(base)
  assert ModelConfig.from_hf_dict(cfg.to_hf_dict()) == cfg


@pytest.mark.parametrize("key,value,needle", [
    ("model_type", "llama", "model_type"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "rope_scaling.rope_type"),
    ("rope_scaling", {"type": "linear", "factor": 2.0}, "rope_scaling.rope_type"),
    ("use_sliding_window", True, "use_sliding_window"),
    ("hidden_act", "gelu", "hidden_act"),
    ("attention_dropout", 0.1, "attention_dropout"),
    ("layer_types", ["sliding_attention"] * 36, "layer_types"),
    ("attention_bias", True, "attention_bias"),
    ("quantization_config", {"quant_method": "awq"}, "quantization_config"),
])
def test_unsupported_hf_settings_fail_naming_the_key(key, value, needle):
  d = dict(QWEN25_3B, **{key: value})
  with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
    ModelConfig.from_hf_dict(d)


def test_missing_required_key():
  d = dict(QWEN25_3B)
  del d["hidden_size"]
  with pytest.raises(ValueError, match="hidden_size"):
    ModelConfig.from_hf_dict(d)


@pytest.mark.parametrize("fields,needle", [
    (dict(num_heads=4, num_kv_heads=3), "divisible"),
    (dict(hidden_size=30, num_heads=4, head_dim=None), "head_dim"),
    (dict(head_dim=7), "even"),
    (dict(dtype="float64"), "dtype"),
    (dict(remat="sometimes"), "remat"),
    (dict(family="llama"), "family"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(rope_theta=0.0), "rope_theta"),
])
def test_invalid_fields_rejected(fields, needle):
  with pytest.raises(ValueError, match=needle):
    ModelConfig.tiny(**fields)


def test_config_is_hashable_with_token_id_lists():
  cfg = ModelConfig.from_hf_dict(dict(QWEN3_8B, eos_token_id=[151645, 151643]))
  assert cfg.eos_token_id == (151645, 151643)
  hash(cfg)
  assert cfg.to_hf_dict()["eos_token_id"] == [151645, 151643]


class _Tok:
  """The three things ModelConfig.from_config reads of a tokenizer."""
  pad_token_id = 7

  def __len__(self):
    return 300

  def convert_tokens_to_ids(self, token):
    assert token == "<|im_end|>"
    return 11


def _section(**changes):
  section = dict(checkpoint="", from_scratch=True, family="qwen3", vocab_size=0, hidden_size=32,
                 intermediate_size=64, num_layers=1, num_heads=4, num_kv_heads=2, head_dim=8,
                 rope_theta=10000.0, tie_word_embeddings=False, max_position_embeddings=512,
                 dtype="bfloat16", remat="full", attention="chunked", attention_chunk=64,
                 logprob_chunk=32)
  section.update(changes)
  return section


def test_from_config_dims_and_tokenizer():
  cfg = ModelConfig.from_config(_section(), _Tok())
  assert (cfg.family, cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.head_dim) == (
      "qwen3", 300, 32, 1, 8)
  assert (cfg.eos_token_id, cfg.pad_token_id, cfg.max_position_embeddings) == (11, 7, 512)
  assert (cfg.dtype, cfg.remat, cfg.attention, cfg.attention_chunk, cfg.logprob_chunk) == (
      "bfloat16", "full", "chunked", 64, 32)
  assert ModelConfig.from_config(_section(vocab_size=500), _Tok()).vocab_size == 500
  assert ModelConfig.from_config(_section(vocab_size=500)).eos_token_id is None  # no tokenizer
  with pytest.raises(ValueError, match="vocab_size is 0"):
    ModelConfig.from_config(_section())
  with pytest.raises(ValueError, match="ModelConfig.num_layers must be a positive int"):
    ModelConfig.from_config(_section(num_layers=0), _Tok())


def test_from_config_checkpoint_dims_with_the_sections_numerics(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  (tmp_path / "config.json").write_text(json.dumps(QWEN25_3B))
  cfg = ModelConfig.from_config(_section(checkpoint=str(tmp_path), from_scratch=False), _Tok())
  assert (cfg.family, cfg.vocab_size, cfg.hidden_size, cfg.num_layers) == (
      "qwen2", 151936, 2048, 36)
  assert (cfg.eos_token_id, cfg.dtype, cfg.remat, cfg.attention) == (
      151645, "bfloat16", "full", "chunked")
  # from_scratch wins over a checkpoint: the section's own dims.
  scratch = ModelConfig.from_config(_section(checkpoint=str(tmp_path)), _Tok())
  assert (scratch.hidden_size, scratch.vocab_size) == (32, 300)
