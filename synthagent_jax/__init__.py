"""synthagent_jax: training small language models to be good agents (SynthAgent, in JAX).

Rooms (see ARCHITECTURE in the shared plan): models, parallel, inference, llm, envs,
rollout, rewards, synthesis, rl, evals, utils. Imports point up that table only.
"""

__version__ = "0.1.0"
