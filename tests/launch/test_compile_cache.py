"""launch.train.enable_compile_cache: a program compiled after it is stored in the directory."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_compiled_program_is_stored_and_empty_path_is_off(tmp_path):
  cache = tmp_path / "xla"
  code = f"""
import jax, jax.numpy as jnp
from launch import train
train.enable_compile_cache("")
assert jax.config.jax_compilation_cache_dir is None, jax.config.jax_compilation_cache_dir
train.enable_compile_cache({str(cache)!r})
assert jax.config.jax_compilation_cache_dir == {str(cache)!r}
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # store even a quick one
def doubled_sine(x):
  return jnp.sin(x) * 2.0
jax.jit(doubled_sine)(jnp.ones(3)).block_until_ready()
"""
  env = {k: v for k, v in os.environ.items()  # conftest turns the cache off for the others
         if k not in ("JAX_COMPILATION_CACHE_DIR", "JAX_ENABLE_COMPILATION_CACHE")}
  subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=300)
  stored = [p.name for p in cache.iterdir()]
  assert any(name.startswith("jit_doubled_sine-") for name in stored), stored
