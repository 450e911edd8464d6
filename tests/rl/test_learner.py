"""train_step: logprob alignment against transformers, mesh equivalence, exact accumulation,
non-finite skipping, learning."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from synthagent_jax import models
from synthagent_jax import parallel
from synthagent_jax.models import qwen
from synthagent_jax.rl import learner
from synthagent_jax.rl import state as state_lib
from tests import toys
from tests.rl.learner_toys import DEFAULT_LEARNER, T, make_host_batch

# Parameters after two optimizer updates on different meshes / accumulation splits agree to
# this absolute tolerance (float32 reductions in a different order; Adam normalises the
# gradient, so relative differences of ~1e-6 in grads show up as ~1e-5 in params at lr 1e-2).
PARAM_ATOL = 1e-4
LOSS_RTOL = 1e-5


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_match_transformers(tmp_path, temperature):
  path = toys.write_hf_checkpoint(tmp_path, "qwen2", seed=1)
  hf = toys.load_hf_reference(path)
  graphdef, params = state_lib.split_params(models.from_pretrained(path))
  batch = make_host_batch(seed=3, b=4, t=9)
  logits = toys.hf_logits(hf, batch["input_ids"], batch["attention_mask"]).astype(np.float64)
  logits = logits / temperature  # the tempered policy softmax(logits / T) that rollouts sample
  logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  # Token t is predicted by the logits at t - 1.
  want = np.zeros(batch["input_ids"].shape)
  for b in range(4):
    for t in range(1, 9):
      want[b, t] = logits[b, t - 1, batch["input_ids"][b, t]] - logz[b, t - 1]
  logp, ent = jax.jit(learner.token_logprobs, static_argnums=(0, 4))(
      graphdef, params, jnp.asarray(batch["input_ids"], jnp.int32),
      jnp.asarray(batch["attention_mask"], jnp.int32), temperature)
  real = batch["attention_mask"].astype(bool)  # logits at padded positions are meaningless
  np.testing.assert_allclose(np.asarray(logp)[real], want[real], atol=2e-5)
  assert np.all(np.asarray(logp)[:, 0] == 0)
  p = np.exp(logits - logz[..., None])
  want_ent = -(p * np.log(p)).sum(-1)
  np.testing.assert_allclose(np.asarray(ent)[:, 1:][real[:, 1:]],
                             want_ent[:, :-1][real[:, 1:]], atol=2e-5)


def _run(env, n_steps=2, seed=0):
  state = env.fresh_state()
  for i in range(n_steps):
    state, metrics = env.step(state, env.batch(seed + i))
  return jax.device_get(state.params), jax.device_get(metrics)


def _assert_same(ref, got):
  (p0, m0), (p1, m1) = ref, got
  np.testing.assert_allclose(m1["learner/loss"], m0["learner/loss"], rtol=LOSS_RTOL, atol=1e-7)
  for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(p1)):
    np.testing.assert_allclose(b, a, atol=PARAM_ATOL, rtol=0)
  assert m1["learner/num_tokens"] == m0["learner/num_tokens"]


@pytest.fixture(scope="module")
def single_device_run(learner_env):
  # micro_batch_size 4 inside minibatches of 8: two accumulation micro-steps per update.
  return _run(learner_env((1, 1, 1)))


MESH_CFG = dataclasses.replace(DEFAULT_LEARNER, micro_batch_size=8)  # no accumulation


@pytest.mark.parametrize("shape", [
    (2, 2, 2),
    pytest.param((8, 1, 1), marks=pytest.mark.slow),
    pytest.param((1, 8, 1), marks=pytest.mark.slow),
])
def test_meshes_match_single_device(learner_env, single_device_run, shape):
  _assert_same(single_device_run, _run(learner_env(shape, MESH_CFG)))


def test_params_are_sharded_by_rules(learner_env):
  env = learner_env((2, 2, 2), MESH_CFG)
  state = env.fresh_state()
  embed = state.params["embed"]
  assert embed.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  assert embed.addressable_shards[0].data.shape == (128 // 2, 32 // 2)
  mu = state.opt_state[1][0].mu["embed"]  # chain(clip, adamw) -> adam moments follow params
  assert mu.sharding == embed.sharding


def test_non_finite_loss_skips_update(learner_env):
  env = learner_env()
  state = env.fresh_state()
  batch = dict(env.batch(0))
  # Same sharding as make_batch's arrays, so the compiled step is reused (no retrace).
  batch["advantages"] = jax.device_put(np.full(batch["advantages"].shape, np.nan, np.float32),
                                       batch["advantages"].sharding)
  before = jax.device_get(state)
  state, metrics = env.step(state, batch)
  after = jax.device_get(state)
  assert float(metrics["learner/skipped_updates"]) == 2.0  # both minibatches
  for a, b in zip(jax.tree.leaves((before.params, before.opt_state)),
                  jax.tree.leaves((after.params, after.opt_state))):
    np.testing.assert_array_equal(a, b)
  assert int(after.step) == int(before.step) + 1
  # The state is still good: a finite batch trains normally afterwards.
  state, metrics = env.step(state, env.batch(0))
  assert float(metrics["learner/skipped_updates"]) == 0.0
  assert np.isfinite(float(metrics["learner/loss"]))


def test_metrics_and_learning_signal(learner_env, single_device_run):
  _, m = single_device_run
  for k in ("loss", "grad_norm", "clip_frac", "approx_kl", "entropy", "ratio_mean", "ratio_min",
            "ratio_max", "skipped_updates", "updates"):
    assert f"learner/{k}" in m, k
  assert m["learner/updates"] == 2.0
  assert 0.0 < m["learner/entropy"] <= np.log(128) + 1e-4
  assert m["learner/ratio_min"] <= m["learner/ratio_mean"] <= m["learner/ratio_max"]


def test_one_update_step_skips_the_old_logprob_pass(learner_env):
  """One epoch, one minibatch: the pre-update policy is the one the loss evaluates, so the step
  uses stop_gradient(logp) as old log-probs instead of a second forward pass. The result equals
  the step given old log-probs computed separately from the same params, at the same cost."""
  cfg = learner.LearnerConfig(minibatch_size=16, micro_batch_size=8, clip_low=0.2,
                              clip_high=0.2)
  env = learner_env((1, 1, 1), cfg)
  host = make_host_batch(seed=5)
  old = learner.make_logprobs_fn(env.spec, cfg, env.mesh)(env.fresh_state().params,
                                                          learner.make_batch(host, env.mesh))
  given = learner.make_batch(dict(host, old_logprobs=np.asarray(old)), env.mesh)
  absent = learner.make_batch(host, env.mesh)
  step_given = env.step.lower(env.fresh_state(), given).compile()
  step_absent = env.step.lower(env.fresh_state(), absent).compile()
  with_old = step_given(env.fresh_state(), given)
  without = step_absent(env.fresh_state(), absent)
  _assert_same(jax.device_get((with_old[0].params, with_old[1])),
               jax.device_get((without[0].params, without[1])))
  assert float(without[1]["learner/ratio_max"]) == 1.0  # exactly on-policy
  # No extra forward pass (a separate one would add about a third of the step's FLOPs).
  ratio = step_absent.cost_analysis()["flops"] / step_given.cost_analysis()["flops"]
  assert ratio < 1.05, ratio


def test_batch_validation():
  good = make_host_batch(0, b=4, t=6)
  with pytest.raises(ValueError, match="missing"):
    learner.validate_batch({k: v for k, v in good.items() if k != "advantages"})
  with pytest.raises(ValueError, match="shape"):
    learner.validate_batch(dict(good, loss_mask=good["loss_mask"][:, :5]))
  with pytest.raises(ValueError, match="unknown keys"):
    learner.validate_batch(dict(good, rewards=np.zeros(4)))
  with pytest.raises(ValueError, match="not divisible"):
    learner.LearnerConfig(minibatch_size=3).sizes(4)
  mesh = parallel.make_mesh(parallel.MeshConfig(shape=(2, 2, 2)))
  with pytest.raises(ValueError, match="multiple of data x fsdp = 4"):
    learner.make_train_step(None, None, learner.LearnerConfig(micro_batch_size=2), mesh)


def test_advantages_count_on_the_loss_mask_only(learner_env):
  """[B, T] advantages matter only where the loss mask is 1: a row's advantage broadcast over all
  its tokens (what episode credit was before the stage gave [B, T] always) trains exactly like
  the same advantage on its loss mask alone (what rewards.credit gives); zeroing it on half of
  the tokens changes the update. A [B] advantage is refused."""
  env = learner_env()
  host = make_host_batch(3)
  on_mask = dict(host, advantages=host["advantages"] * host["loss_mask"])
  s_all, m_all = env.step(env.fresh_state(), learner.make_batch(host, env.mesh))
  s_mask, m_mask = env.step(env.fresh_state(), learner.make_batch(on_mask, env.mesh))
  np.testing.assert_allclose(float(m_mask["learner/loss"]), float(m_all["learner/loss"]),
                             rtol=LOSS_RTOL)
  for a, b in zip(jax.tree.leaves(jax.device_get(s_all.params)),
                  jax.tree.leaves(jax.device_get(s_mask.params))):
    np.testing.assert_allclose(a, b, atol=PARAM_ATOL)
  half = dict(host, advantages=host["advantages"] * (np.arange(T) % 2 == 0))
  _, m_half = env.step(env.fresh_state(), learner.make_batch(half, env.mesh))
  assert abs(float(m_half["learner/loss"]) - float(m_all["learner/loss"])) > 1e-4
  with pytest.raises(ValueError, match=r"expected \(16, 10\)"):
    learner.validate_batch(dict(host, advantages=np.zeros((16,), np.float32)))


@pytest.mark.slow  # two compiled shapes (~1 min on the shared CPU); tests/rl/test_losses.py has
                   # the same property on the loss alone
def test_drgrpo_loss_ignores_padded_columns(learner_env):
  """seq-mean-token-sum-norm divides by the constant loss_norm_tokens, so a batch padded with
  4 more (masked) columns trains to the same loss and params; with T as the divisor the loss
  would shrink by 10 / 14."""
  cfg = dataclasses.replace(DEFAULT_LEARNER, agg="seq-mean-token-sum-norm", loss_norm_tokens=20)
  env = learner_env((1, 1, 1), cfg)
  host = make_host_batch(5)
  wide = {k: (np.concatenate([v, np.zeros((v.shape[0], 4), v.dtype)], 1) if v.ndim == 2 else v)
          for k, v in host.items()}
  s0, m0 = env.step(env.fresh_state(), learner.make_batch(host, env.mesh))
  s1, m1 = env.step(env.fresh_state(), learner.make_batch(wide, env.mesh))
  np.testing.assert_allclose(float(m1["learner/loss"]), float(m0["learner/loss"]),
                             rtol=LOSS_RTOL)
  for a, b in zip(jax.tree.leaves(jax.device_get(s0.params)),
                  jax.tree.leaves(jax.device_get(s1.params))):
    np.testing.assert_allclose(a, b, atol=PARAM_ATOL)



def _full_logits_logprobs(graphdef, params, input_ids_bt, attention_mask_bt, temperature):
  """The [B, T, V] reference: whole logits, log-softmax and softmax at once."""
  model = nnx.merge(graphdef, params)
  logits_btv = model(input_ids_bt, attention_mask_bt=attention_mask_bt)[:, :-1] / temperature
  logz_bt = jax.nn.logsumexp(logits_btv, axis=-1)
  picked_bt = jnp.take_along_axis(logits_btv, input_ids_bt[:, 1:, None], axis=-1)[..., 0]
  probs_btv = jax.nn.softmax(logits_btv, axis=-1)
  entropy_bt = jax.lax.stop_gradient(logz_bt - (probs_btv * logits_btv).sum(-1))
  pad = jnp.zeros((input_ids_bt.shape[0], 1), jnp.float32)
  return (jnp.concatenate([pad, picked_bt - logz_bt], 1),
          jnp.concatenate([pad, entropy_bt], 1))


@pytest.mark.parametrize("tied,temperature,chunk", [(True, 1.0, 3), (False, 0.7, 4),
                                                    (True, 0.7, 64)])
def test_chunked_logprobs_equal_full_logits(tied, temperature, chunk):
  """Values and gradients of the blocked LM head equal the [B, T, V] path within 1e-5, with a
  block size that does not divide T (padded last block) and one larger than T."""
  model = toys.tiny_model(seed=4, tie_word_embeddings=tied)
  model = qwen.with_config(model, logprob_chunk=chunk)
  graphdef, params = state_lib.split_params(model)
  batch = make_host_batch(seed=5, b=3, t=10)
  ids = jnp.asarray(batch["input_ids"], jnp.int32)
  mask = jnp.asarray(batch["attention_mask"], jnp.int32)
  w_bt = jnp.asarray(np.random.RandomState(0).randn(3, 10), jnp.float32)
  fns = {"chunked": learner.token_logprobs, "full": _full_logits_logprobs}
  out = {k: jax.jit(f, static_argnums=(0, 4))(graphdef, params, ids, mask, temperature)
         for k, f in fns.items()}
  for got, want in zip(out["chunked"], out["full"]):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)

  def loss(f, params):
    logp_bt, ent_bt = f(graphdef, params, ids, mask, temperature)
    return (logp_bt * w_bt).sum() + ent_bt.sum()  # the entropy carries no gradient on both

  grads = {k: jax.jit(jax.grad(functools.partial(loss, f)))(params) for k, f in fns.items()}
  leaves = jax.tree.leaves(grads["full"])
  assert max(float(jnp.abs(g).max()) for g in leaves) > 1e-2  # a real gradient to compare
  for got, want in zip(jax.tree.leaves(grads["chunked"]), leaves):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)


def test_logprob_gradient_memory_below_quarter_of_logits():
  """XLA's memory analysis of the compiled gradient (benchmarks/logprob_memory at V=32k,
  T=2048): temporaries < 0.25x the float32 [B, T, V] logits (the full path needs ~3x)."""
  from benchmarks import logprob_memory
  row = logprob_memory.measure(vocab=32768, seq=2048, batch=1, logprob_chunk=64)
  assert row["temp_vs_logits"] < 0.25, row


@pytest.mark.slow
def test_chunked_attention_and_logprobs_on_a_mesh_match_single_device(single_device_run,
                                                                      monkeypatch):
  """model.attention=chunked with small blocks, log-prob blocks of 3, on a 2x2x2 mesh: the same
  two updates as the naive single-device run."""
  from tests.rl import learner_toys
  plain = toys.tiny_model_config
  monkeypatch.setattr(toys, "tiny_model_config", lambda *a, **k: plain(*a, **k).replace(
      attention="chunked", attention_chunk=4, logprob_chunk=3))
  env = learner_toys.Env((2, 2, 2), MESH_CFG)
  assert env.model_cfg.attention == "chunked"
  _assert_same(single_device_run, _run(env))


PAD_ROWS = [1, 6, 11, 14]  # scattered: every one of the batch's strided chunks holds one


def _with_padding_rows(host: dict, rows: list, advantage: float) -> dict:
  out = {k: np.array(v) for k, v in host.items()}
  for k in ("attention_mask", "loss_mask", "input_ids", "sampler_logprobs"):
    out[k][rows] = 0
  out["advantages"][rows] = advantage
  return out


def test_padding_rows_go_to_skipped_micro_batches(learner_env):
  """12 real rows and 4 padding rows scattered over the batch (as the loop pads to a fixed row
  count): the padding rows are gathered into the last micro-batch, which is never computed.
  Proof by poison: NaN advantages on the padding rows would make the loss NaN (the update
  skipped) in any micro-batch that ran; the step equals the one with finite padding."""
  env = learner_env()  # 16 rows, minibatches of 8, micro-batches of 4
  host = make_host_batch(seed=7)
  clean = env.step(env.fresh_state(), learner.make_batch(
      _with_padding_rows(host, PAD_ROWS, 0.0), env.mesh))
  batch = dict(learner.make_batch(_with_padding_rows(host, PAD_ROWS, 0.0), env.mesh))
  poison = _with_padding_rows(host, PAD_ROWS, np.nan)["advantages"]
  batch["advantages"] = jax.device_put(poison, batch["advantages"].sharding)
  state, m = env.step(env.fresh_state(), batch)
  assert float(m["learner/skipped_updates"]) == 0.0
  assert float(m["learner/updates"]) == 2.0
  _assert_same(jax.device_get((clean[0].params, clean[1])), jax.device_get((state.params, m)))


def test_logprobs_of_a_padded_batch_keep_each_rows_place(learner_env):
  env = learner_env()
  fn = learner.make_logprobs_fn(env.spec, env.cfg, env.mesh)
  params = env.fresh_state().params
  host = make_host_batch(seed=8)
  full = np.asarray(fn(params, learner.make_batch(host, env.mesh)))
  padded = np.asarray(fn(params, learner.make_batch(_with_padding_rows(host, PAD_ROWS, 0.0),
                                                    env.mesh)))
  real = [i for i in range(full.shape[0]) if i not in PAD_ROWS]
  np.testing.assert_allclose(padded[real], full[real], rtol=0, atol=1e-6)
  np.testing.assert_array_equal(padded[PAD_ROWS], 0.0)
