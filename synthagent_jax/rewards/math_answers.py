"""Math answer verification with the `math-verify` package (sympy equivalence, LaTeX aware).

    verify_math("<answer>\\frac{1}{2}</answer>", "0.5") -> True

The prediction's last <answer>...</answer> is used when present, else the whole text. math-verify
guards parsing with SIGALRM timeouts, which only work in the main thread; elsewhere the timeouts are
disabled (a pathological expression can then take long).
"""

from __future__ import annotations

import re
import threading

import math_verify

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def extract_answer(text: str) -> str:
  found = _ANSWER.findall(text)
  return found[-1].strip() if found else text.strip()


def _parse(text: str, timeout: int | None):
  # A bare expression parses more reliably wrapped as inline LaTeX.
  candidates = [text] if ("$" in text or "\\boxed" in text) else [f"${text}$", text]
  for cand in candidates:
    parsed = math_verify.parse(cand, parsing_timeout=timeout)
    if parsed:
      return parsed
  return []


def verify_math(prediction: str, gold: str, timeout_s: int = 5) -> bool:
  """Whether the prediction's answer equals the gold answer mathematically."""
  timeout = timeout_s if threading.current_thread() is threading.main_thread() else None
  gold_parsed = _parse(str(gold), timeout)
  pred_parsed = _parse(extract_answer(str(prediction)), timeout)
  if not gold_parsed or not pred_parsed:
    return False
  return bool(math_verify.verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
