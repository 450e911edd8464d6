"""Shared test setup.

Eight simulated CPU devices so mesh tests run anywhere; this must happen before jax is imported,
which is why it lives at the top of the root conftest.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# No persistent compilation cache (launch.train sets one up by default): tests compile afresh and
# write nothing under ~/.cache; tests/launch/test_compile_cache.py turns it back on for itself.
os.environ.setdefault("JAX_ENABLE_COMPILATION_CACHE", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
