"""launch.builders.engine: engine kinds come from one registry (ENGINE_KINDS), each entry saying
whether its engine reads params on this process's devices, and every engine it builds satisfies
the `Engine` protocol the training loop calls (generate, update_weights, wait_ready)."""

from flax import nnx
import pytest

from configs import base
from launch import builders
from synthagent_jax.inference import engine as engine_lib
from synthagent_jax.inference import sglang
from tests import toys


def test_registry_holds_both_kinds_with_their_params_placement():
  assert {k: v.device_params for k, v in builders.ENGINE_KINDS.items()} == {
      "jax": True, "sglang": False}
  c = base.base_config()
  c.engine.kind = "vllm"
  with pytest.raises(ValueError, match="unknown engine.kind 'vllm'; known: jax, sglang"):
    builders.engine(c, None, None, "/tmp")
  with pytest.raises(ValueError, match="registered twice"):
    builders.register_engine("jax", device_params=True)(lambda *a: None)


def test_built_engines_satisfy_the_protocol(tmp_path):
  c = base.base_config()
  graphdef, params = nnx.split(toys.tiny_model())
  jax_engine = builders.engine(c, graphdef, params, str(tmp_path))
  assert isinstance(jax_engine, engine_lib.Engine)
  assert jax_engine.update_weights((graphdef, params), 1) == {}
  jax_engine.wait_ready()
  assert jax_engine.split()[1] is params
  c.engine.kind = "sglang"
  c.engine.urls = ("http://127.0.0.1:1",)
  with pytest.raises(ValueError, match="needs --config.engine.weights_dir"):
    builders.engine(c, graphdef, params, str(tmp_path))
  c.engine.weights_dir = str(tmp_path / "weights")
  with builders.engine(c, graphdef, params, str(tmp_path)) as http_engine:
    assert isinstance(http_engine, sglang.SGLangEngine)
    assert isinstance(http_engine, engine_lib.Engine)
