"""Where training tasks come from.

offline        procedural teacher over the toy worlds in data/worlds/ (no LLM; embedded default)
worlds         world-spec loading/validation and slot sampling for `offline`
pipeline       LLM teacher pipeline: seeds -> stage_tools_task -> stage_underspecify ->
               stage_tool_check -> stage_solve -> stage_rubric -> filters, with a stage report
teacher        prompt files (prompts/), batched JSON asks with retries and rejection reasons
jsonx          robust JSON extraction from teacher replies
filters        schema validation, near-duplicate removal, difficulty filter
split          held-out split by task-id hash (`is_heldout(task_id, frac)`)
store          crash-safe JSONL append/resume
"""
