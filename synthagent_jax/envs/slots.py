"""Does an agent message ask the user for a given private-info slot?

One matcher shared by the rule-based user (`envs/user.py`, which answers exactly the slots a
question asks for) and the rubric check `asked_user_for` (`rewards/checks.py`), so the reward
credits an ask exactly when the simulated user would have answered it.

A slot name such as "order_id" or "shippingAddress" splits into tokens ("order", "id"). A token is
found in the text when a word of the text starts with it (tokens of 4+ letters, so "ordered"
matches "order") or equals it or one of its synonyms. A slot is asked for when the text is a
request (a "?" or a request phrase) and either every token is found, or the slot's last token (its
head noun) is found and is specific (not "id", "number", ...). Full matches win over head matches.
"""

from __future__ import annotations

import re
from typing import Iterable

SYNONYMS: dict[str, tuple[str, ...]] = {
    "id": ("id", "identifier", "number", "no", "#", "code"),
    "number": ("number", "no", "#", "num"),
    "email": ("email", "e-mail", "mail"),
    "phone": ("phone", "telephone", "mobile", "cell"),
    "address": ("address", "street", "ship to", "deliver to"),
    "zip": ("zip", "postal", "postcode"),
    "date": ("date", "day", "when"),
    "time": ("time", "when", "hour"),
    "name": ("name", "called"),
    "reason": ("reason", "why"),
    "dob": ("dob", "birth", "birthday"),
    "birthday": ("birthday", "birth", "dob"),
    "quantity": ("quantity", "how many", "amount"),
    "amount": ("amount", "how much", "sum", "total"),
    "count": ("count", "how many", "number"),
    "size": ("size", "how big"),
    "color": ("color", "colour"),
    "location": ("location", "where", "city"),
    "city": ("city", "town", "where"),
    "preference": ("preference", "prefer", "rather"),
    "budget": ("budget", "spend", "how much"),
}
GENERIC_HEADS = frozenset({"id", "number", "no", "code", "info", "details", "type", "value", "key"})
REQUEST_PHRASES = ("could you", "can you", "would you", "please", "tell me", "let me know",
                   "provide", "share", "need your", "need the", "what is", "what's", "which")


def slot_tokens(slot: str) -> list[str]:
  """'shippingAddress' / 'shipping_address' / 'shipping address' -> ['shipping', 'address']."""
  spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", slot)
  return [t for t in re.split(r"[^a-zA-Z0-9]+", spaced.lower()) if t]


def slot_phrase(slot: str) -> str:
  """Human words for a slot: 'order_id' -> 'order id'."""
  return " ".join(slot_tokens(slot))


def is_request(text: str) -> bool:
  low = text.lower()
  return "?" in low or any(p in low for p in REQUEST_PHRASES)


def _words(text: str) -> list[str]:
  return re.findall(r"[a-z0-9]+|#", text.lower())


def _token_found(token: str, words: list[str], low_text: str) -> bool:
  for form in SYNONYMS.get(token, (token,)):
    if " " in form or "-" in form:
      if form in low_text:
        return True
    elif form in words or (len(form) >= 4 and any(w.startswith(form) for w in words)):
      return True
  return False


def asked_slots(text: str, slots: Iterable[str]) -> list[str]:
  """The slots (in the given order) that `text` asks for; [] when it asks for none."""
  slots = list(slots)
  if not is_request(text):
    return []
  low = text.lower()
  words = _words(text)
  full, head = [], []
  for slot in slots:
    tokens = slot_tokens(slot)
    if not tokens:
      continue
    found = [_token_found(t, words, low) for t in tokens]
    if all(found):
      full.append(slot)
    elif found[-1] and tokens[-1] not in GENERIC_HEADS:
      head.append(slot)
  return full or head


def asks_for(text: str, slot: str, all_slots: Iterable[str] = ()) -> bool:
  """Whether `text` asks for `slot`, judged among all the user's slots (as the rule user does)."""
  slots = list(all_slots)
  if slot not in slots:
    slots.append(slot)
  return slot in asked_slots(text, slots)
