"""Does an agent message ask the user for a given private-info slot?

One matcher shared by the rule-based user (`envs/user.py`, which answers exactly the slots a
question asks for) and the rubric check `asked_user_for` (`rewards/checks.py`), so the reward
credits an ask exactly when the simulated user would have answered it.

A slot name such as "order_id" or "shippingAddress" splits into tokens ("order", "id"). A token is
found in the text when a word of the text starts with it (tokens of 4+ letters, so "ordered"
matches "order") or equals it or one of its synonyms. A slot is asked for when the text is a
request (a "?" or a request phrase) and either every token is found, or the slot's last token (its
head noun) is found and is specific (not "id", "number", ...). Full matches win over head matches.

Over-asking (`requested_details`): a question is also matched against COMMON_DETAILS, personal
details agents commonly ask for, so a shotgun question ("your name, email, phone, address, date
of birth and order number?") is seen asking for details the user does not hold and the task does
not need, not only for the user's own slots. A common detail that one of the user's slots already
covers ("email" when the user holds "email_address") is not counted twice.
"""

from __future__ import annotations

import functools
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


# Personal details an agent may ask a user for, beyond any one task's slots (see requested_details).
COMMON_DETAILS = ("full_name", "email", "phone", "address", "zip", "dob", "password",
                  "card_number", "account_number", "customer_id", "order_id",
                  "social_security_number")


@functools.lru_cache(maxsize=4096)
def related(a: str, b: str) -> bool:
  """Whether asking for slot `a` by name would be heard as asking for slot `b`, or vice versa."""
  return (asks_for(f"What is your {slot_phrase(a)}?", b) or
          asks_for(f"What is your {slot_phrase(b)}?", a))


def requested_details(text: str, user_slots: Iterable[str]) -> tuple[list[str], list[str]]:
  """(the user's slots `text` asks for, COMMON_DETAILS it asks for that no user slot covers)."""
  user_slots = list(user_slots)
  asked = asked_slots(text, user_slots)
  # Each common detail is judged on its own: a shotgun question's full matches must not hide
  # the head-noun matches ("name" for full_name) the way they do among one user's slots.
  others = [d for d in COMMON_DETAILS if d in asked_slots(text, [d])
            and not any(related(d, s) for s in user_slots)]
  return asked, others
