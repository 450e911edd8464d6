"""Trains the project's shipped byte-level BPE tokenizer (data/tokenizer/).

Rerunnable and deterministic: the same flags give byte-identical files (the repository text is
read from the pinned --corpus_commit, not the working tree; tests check the shipped files):

    python data/tokenizer/train_tokenizer.py            # writes data/tokenizer/{tokenizer,tokenizer_config}.json
    python data/tokenizer/train_tokenizer.py --vocab_size=4096 --out_dir=/tmp/tok

Training text = the repository's own .md/.py files + a generated corpus of agent-style dialogue
(tool names, JSON arguments, English instructions across the project's domains, numbers, dates,
<tool_call>/<tool_response> blocks), so the tiny model's vocabulary fits the text it will see.

The tokenizer mirrors Qwen2's design at small scale: the same digit-splitting pre-tokenizer regex,
byte-level alphabet (any unicode round-trips), and Qwen's special/added tokens. The chat template
(qwen25_chat_template.jinja, next to this file) is embedded into tokenizer_config.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import subprocess
from typing import Iterator

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
# The repo snapshot the shipped tokenizer was trained on (its .md/.py files are the corpus).
CORPUS_COMMIT = "5f641075d1ebc31a4605dd6acf33a0be9d224c8e"

# (content, special). Qwen marks the ChatML tokens special and the tool/think tags as plain added
# tokens (special=False) so decode(skip_special_tokens=True) keeps them; we do the same.
ADDED_TOKENS = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)

# Qwen2's pre-tokenizer split pattern: contractions, letter runs, single digits, punctuation runs,
# newlines, whitespace. Single digits keep numbers compositional.
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

DOMAINS = {
    "travel": (["search_flights", "book_flight", "cancel_booking", "get_booking", "search_hotels",
                "book_hotel", "change_seat"],
               ["origin", "destination", "date", "passengers", "booking_id", "cabin", "city",
                "check_in", "check_out", "seat"]),
    "banking": (["get_balance", "transfer_funds", "list_transactions", "freeze_card",
                 "open_account", "get_account"],
                ["account_id", "amount", "currency", "to_account", "card_last4", "start_date",
                 "end_date"]),
    "calendar": (["list_events", "create_event", "delete_event", "reschedule_event",
                  "find_free_slot"],
                 ["event_id", "title", "start_time", "end_time", "attendees", "date", "duration"]),
    "retail": (["search_products", "get_order", "cancel_order", "return_item", "update_address",
                "track_shipment"],
               ["order_id", "product_id", "quantity", "reason", "address", "zip_code", "email"]),
    "weather": (["get_forecast", "get_current_weather", "get_alerts"],
                ["city", "date", "units", "days", "latitude", "longitude"]),
    "restaurants": (["search_restaurants", "make_reservation", "cancel_reservation", "get_menu"],
                    ["restaurant_id", "party_size", "time", "date", "cuisine", "reservation_id"]),
    "clinic": (["find_doctor", "book_appointment", "cancel_appointment", "get_patient_record",
                "list_available_slots"],
               ["patient_id", "doctor_id", "specialty", "date", "time", "appointment_id"]),
    "it_helpdesk": (["reset_password", "create_ticket", "get_ticket", "unlock_account",
                     "check_service_status", "assign_license"],
                    ["user_id", "ticket_id", "priority", "service", "description", "license"]),
}
CITIES = ["Paris", "Berlin", "Tokyo", "New York", "Lisbon", "Nairobi", "Toronto", "Sydney",
          "Madrid", "Seoul", "Chicago", "Boston", "Rome", "Oslo", "Cairo", "Lima", "Zurich"]
NAMES = ["Alice", "Bob", "Carla", "Dmitri", "Elena", "Farah", "George", "Hana", "Ivan", "Julia",
         "Kenji", "Laura", "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq"]
VERBS = ["I need to", "Please", "Could you", "Can you help me", "I'd like to", "I want to",
         "Help me", "I have to", "We need to", "Would you"]
ASKS = ["What is your {slot}?", "Could you tell me the {slot}?", "Which {slot} should I use?",
        "Can you confirm the {slot}, please?", "I need your {slot} to continue."]
ANSWERS = ["Done. {x} is confirmed.", "I have completed the request: {x}.",
           "Your request was processed successfully ({x}).", "All set: {x}."]
STATUS = ["ok", "confirmed", "pending", "cancelled", "not_found", "error", "success"]


def _value(rng: random.Random, slot: str):
  if "date" in slot or slot in ("check_in", "check_out"):
    return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
  if "time" in slot:
    return f"{rng.randint(7, 21):02d}:{rng.choice(['00', '15', '30', '45'])}"
  if slot.endswith("_id") or slot == "card_last4":
    return f"{slot[:3].upper()}-{rng.randint(100, 99999)}"
  if slot in ("amount",):
    return round(rng.uniform(1, 5000), 2)
  if slot in ("passengers", "quantity", "party_size", "days", "duration"):
    return rng.randint(1, 12)
  if slot in ("city", "origin", "destination"):
    return rng.choice(CITIES)
  if slot == "email":
    return f"{rng.choice(NAMES).lower()}@example.com"
  return rng.choice(["standard", "high", "economy", "business", "metric", "vegan", "broken item",
                     rng.choice(NAMES)])


def _dialogue(rng: random.Random) -> str:
  domain = rng.choice(sorted(DOMAINS))
  tools, slots = DOMAINS[domain]
  schema = [{"type": "function", "function": {"name": t, "description": f"{t.replace('_', ' ')} in {domain}",
             "parameters": {"type": "object", "properties": {s: {"type": "string"} for s in
                            rng.sample(slots, k=min(3, len(slots)))}}}} for t in rng.sample(tools, k=2)]
  lines = ["<|im_start|>system\nYou are a helpful " + domain.replace("_", " ") + " assistant.\n\n# Tools\n<tools>"]
  lines += [json.dumps(s) for s in schema]
  lines.append("</tools><|im_end|>")
  name = rng.choice(NAMES)
  lines.append(f"<|im_start|>user\nHi, I'm {name}. {rng.choice(VERBS)} {rng.choice(tools).replace('_', ' ')}"
               f" for {rng.choice(CITIES)} on {_value(rng, 'date')}.<|im_end|>")
  for _ in range(rng.randint(1, 4)):
    tool = rng.choice(tools)
    args = {s: _value(rng, s) for s in rng.sample(slots, k=rng.randint(1, 3))}
    if rng.random() < 0.3:
      lines.append(f"<|im_start|>assistant\n<think>\nThe user wants {tool}. I still need the "
                   f"{rng.choice(slots).replace('_', ' ')}.\n</think>\n"
                   f"{rng.choice(ASKS).format(slot=rng.choice(slots).replace('_', ' '))}<|im_end|>")
      lines.append(f"<|im_start|>user\nIt is {_value(rng, rng.choice(slots))}.<|im_end|>")
    lines.append("<|im_start|>assistant\n<tool_call>\n" + json.dumps({"name": tool, "arguments": args})
                 + "\n</tool_call><|im_end|>")
    result = {"status": rng.choice(STATUS), **{s: _value(rng, s) for s in rng.sample(slots, k=2)}}
    lines.append("<|im_start|>user\n<tool_response>\n" + json.dumps(result) + "\n</tool_response><|im_end|>")
  if rng.random() < 0.3:
    lines.append(f"<|im_start|>user\nDid the agent {rng.choice(tools).replace('_', ' ')}? "
                 f"Answer yes or no.<|im_end|>\n<|im_start|>assistant\n{rng.choice(['yes', 'no', 'Yes', 'No'])}<|im_end|>")
  lines.append("<|im_start|>assistant\n<answer>" + rng.choice(ANSWERS).format(x=_value(rng, rng.choice(slots)))
               + "</answer><|im_end|><|endoftext|>")
  return "\n".join(lines)


def repo_texts(commit: str) -> Iterator[str]:
  """The repository's own markdown and python files at `commit` (not the working tree, so the
  corpus, and hence the tokenizer, is reproducible), in path order."""
  try:
    names = subprocess.run(["git", "-C", str(REPO), "ls-tree", "-r", "--name-only", commit],
                           check=True, capture_output=True, text=True).stdout.split("\n")
  except (OSError, subprocess.CalledProcessError) as e:
    raise SystemExit(f"cannot list the corpus files of commit {commit} ({e}); pass "
                     "--corpus_commit=<a commit of this repository>") from e
  for name in sorted(n for n in names if n.endswith((".md", ".py"))):
    if name.startswith("data/tokenizer/"):
      continue
    blob = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:{name}"], check=True,
                          capture_output=True).stdout
    yield blob.decode("utf-8", errors="replace")


def corpus(num_dialogues: int, seed: int, commit: str) -> Iterator[str]:
  yield from repo_texts(commit)
  yield (HERE / "qwen25_chat_template.jinja").read_text(encoding="utf-8")
  rng = random.Random(seed)
  for _ in range(num_dialogues):
    yield _dialogue(rng)


def build_tokenizer(vocab_size: int, num_dialogues: int, seed: int, commit: str) -> Tokenizer:
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
  ])
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size - len(ADDED_TOKENS), min_frequency=1, show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
  tok.train_from_iterator(corpus(num_dialogues, seed, commit), trainer=trainer)
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, s in ADDED_TOKENS if s])
  tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, s in ADDED_TOKENS if not s])
  return tok


def tokenizer_config(tok: Tokenizer) -> dict:
  decoder = {}
  for content, special in ADDED_TOKENS:
    decoder[str(tok.token_to_id(content))] = {
        "content": content, "lstrip": False, "normalized": False, "rstrip": False,
        "single_word": False, "special": special}
  return {
      "add_bos_token": False,
      "add_prefix_space": False,
      "added_tokens_decoder": decoder,
      "bos_token": None,
      "chat_template": (HERE / "qwen25_chat_template.jinja").read_text(encoding="utf-8"),
      "clean_up_tokenization_spaces": False,
      "eos_token": "<|im_end|>",
      "errors": "replace",
      "model_max_length": 32768,
      "pad_token": "<|endoftext|>",
      "split_special_tokens": False,
      "tokenizer_class": "PreTrainedTokenizerFast",
      "unk_token": None,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--vocab_size", type=int, default=4096)
  parser.add_argument("--num_dialogues", type=int, default=6000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out_dir", type=pathlib.Path, default=HERE)
  parser.add_argument("--corpus_commit", default=CORPUS_COMMIT,
                      help="git commit whose .md/.py files are part of the training text")
  args = parser.parse_args()
  if args.vocab_size < 256 + len(ADDED_TOKENS) + 1:
    parser.error(f"--vocab_size must exceed the 256-byte alphabet plus {len(ADDED_TOKENS)} added tokens")
  tok = build_tokenizer(args.vocab_size, args.num_dialogues, args.seed, args.corpus_commit)
  args.out_dir.mkdir(parents=True, exist_ok=True)
  tok.save(str(args.out_dir / "tokenizer.json"))
  with open(args.out_dir / "tokenizer_config.json", "w", encoding="utf-8") as f:
    json.dump(tokenizer_config(tok), f, indent=2, ensure_ascii=False)
    f.write("\n")
  print(f"wrote {args.out_dir} (vocab {tok.get_vocab_size()})")


if __name__ == "__main__":
  main()
