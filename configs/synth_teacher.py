"""LLM-teacher task synthesis: seed -> tools+task -> underspecify -> tool check -> solve -> rubric
-> filters (schema, near-duplicates, difficulty when a policy is configured).

    python -m launch.synthesize --config=configs/synth_teacher.py --out=data/tasks/teacher.jsonl \
        --config.teacher.base_url=http://localhost:30000/v1 --config.teacher.model=Qwen/Qwen2.5-72B-Instruct

Any OpenAI-compatible server works (vLLM, SGLang, a hosted API; the key is read from the env var
named by teacher.api_key_env). With --config.difficulty.base_url/model the policy plays each kept
task pipeline.difficulty_samples times; tasks whose pass rate is not strictly inside
pipeline.difficulty_band are dropped. Stage outputs and rejections go to FILE.work/ so a rerun
resumes every stage (and the difficulty filter, task by task); the stage report is printed and
saved to FILE.work/report.json.
"""

import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.kind = "teacher"
  c.num_tasks = 100          # seeds to run through the pipeline (kept tasks are fewer)
  c.seed = 0
  c.seeds_dir = "data/seeds"
  c.eval_frac = 0.2
  c.validate = True

  c.teacher = ml_collections.ConfigDict()
  c.teacher.base_url = ""
  c.teacher.model = ""
  # Env var holding the teacher's API key ("EMPTY" is sent if unset). The key goes in cleartext
  # only to https:// or a loopback http:// base_url; any other http:// host is refused.
  c.teacher.api_key_env = "OPENAI_API_KEY"
  c.teacher.temperature = 0.7
  c.teacher.max_new_tokens = 2048

  c.pipeline = ml_collections.ConfigDict()
  c.pipeline.max_retries = 2         # extra teacher calls per stage after a rejected reply
  c.pipeline.num_solutions = 3       # k solver runs per task
  c.pipeline.min_agreement = 0.67    # share of solutions that must pass the new rubric (KEEP)
  c.pipeline.pass_reward = 1.0       # a solution passes with rubric reward >= this
  c.pipeline.batch_size = 8          # records per batched teacher call and per resume checkpoint
  c.pipeline.simulate_tools = True   # teacher simulates tool calls the world does not script
  c.pipeline.user = "rule"           # user simulator while solving: rule | llm (the teacher)
  c.pipeline.max_turns = 10          # per solver episode
  c.pipeline.dedup_threshold = 0.6   # n-gram Jaccard at or above this is a near-duplicate
  c.pipeline.dedup_ngram = 3
  c.pipeline.difficulty_samples = 8  # policy episodes per task for the difficulty filter
  c.pipeline.difficulty_band = (0.0, 1.0)  # keep tasks whose pass rate is strictly inside

  # Difficulty filter: the policy to be trained, served by an OpenAI-compatible endpoint, plays
  # each candidate task difficulty_samples times ("" = no difficulty filter).
  c.difficulty = ml_collections.ConfigDict()
  c.difficulty.base_url = ""
  c.difficulty.model = ""
  c.difficulty.api_key_env = "OPENAI_API_KEY"
  c.difficulty.temperature = 1.0
  c.difficulty.max_new_tokens = 1024
  if arg == "smoke":  # the same pipeline on 2 seeds, 1 solution, short episodes
    c.num_tasks = 2
    c.pipeline.update(dict(num_solutions=1, batch_size=2, max_turns=2, difficulty_samples=2))
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; known: ['smoke']")
  return c
