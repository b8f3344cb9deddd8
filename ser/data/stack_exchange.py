"""Stack Exchange questions in the layout of ``HuggingFaceH4/stack-exchange-preferences`` turned into
preference pairs.

A row is one question with its answers: ``{"qid", "question" (title + "\\n\\n" + HTML body),
"answers": [{"answer_id", "pm_score", "selected", "text" (HTML), ...}], "date", "metadata"}``.
``pm_score`` is H4's score (Askell et al. 2021): round(log2(1 + votes)), -1 for negative votes, +1
for the accepted answer. :func:`question_pairs` makes the pairs of one question:

- every two answers with distinct ``pm_score`` give a pair, the higher score chosen
  (:func:`score_pairs`); answers with the same score give none;
- ``pairs_per_prompt`` N caps the pairs of a question: a random sample of N without replacement,
  seeded by ``seed`` and the question's ``qid`` (:func:`cap_pairs`), so the same pairs whatever the
  file order, ``limit`` or run seed; ``lvwerra/stack-exchange-paired`` (the hub's paired variant,
  read by ``conf/data/stack_exchange.yaml``) samples at most 10 pairs per question the same way;
- ``html="text"`` renders question and answers from HTML to Markdown text with ``markdownify`` (the
  library the paired variant used: links, quotes, lists and code blocks stay readable), ``"keep"``
  keeps the HTML as it is.

Every pair of a question has the same prompt, hence the same split key: a question never sits in
two splits. What is dropped is counted by reason: a question without question text or answers list
(``missing_field``), with an answer that is not ``{"text": str, "pm_score": number}``
(``malformed``; both logged with file and row), with fewer than two non-empty answers
(``too_few_answers``), with all scores equal (``equal_scores``); answers empty after rendering
(``empty_answer``); pairs of two answers of identical text (``identical``) and pairs left out by
the cap (``over_pairs_per_prompt``).
"""
from __future__ import annotations

import random
import re

from ser.errors import DataError

FORMAT = "stack_exchange"
HTML_MODES = ("text", "keep")


def render_html(html: str, mode: str = "text") -> str:
    """HTML as Markdown text (``text``, with markdownify) or unchanged (``keep``), stripped."""
    if mode == "keep":
        return html.strip()
    if mode != "text":
        raise DataError(f"data.html='{mode}' must be one of {', '.join(HTML_MODES)}")
    from markdownify import markdownify

    return re.sub(r"\n{3,}", "\n\n", markdownify(html)).strip()


def score_pairs(scores: list[float]) -> list[tuple[int, int]]:
    """``(better, worse)`` answer indices of every two answers with distinct scores, in answer order."""
    out = []
    for i in range(len(scores)):
        for j in range(i + 1, len(scores)):
            if scores[i] != scores[j]:
                out.append((i, j) if scores[i] > scores[j] else (j, i))
    return out


def cap_pairs(pairs: list, n: int | None, seed_key: str) -> list:
    """At most ``n`` of ``pairs``: a seeded random sample without replacement, in their order.

    ``seed_key`` (a string: Python seeds ``random.Random`` from its SHA-512, the same in every
    process) makes the sample a fixed function of the data seed and the question."""
    if n is None or len(pairs) <= n:
        return list(pairs)
    keep = sorted(random.Random(seed_key).sample(range(len(pairs)), n))
    return [pairs[k] for k in keep]


def question_pairs(row: dict, html: str = "text", pairs_per_prompt: int | None = None,
                   seed: int = 0) -> list[tuple[dict | None, object]]:
    """The pairs of one question as ``[(pair, None), ...]`` plus ``(None, reason)`` per drop
    (``(None, (reason, detail))`` for a malformed row, which the loader logs with file and row)."""
    if pairs_per_prompt is not None and int(pairs_per_prompt) < 1:
        raise DataError(f"data.pairs_per_prompt={pairs_per_prompt} must be >= 1 (or null: every pair)")
    question, answers = row.get("question"), row.get("answers")
    if not isinstance(question, str) or not question.strip():
        return [(None, ("missing_field", "no question text"))]
    if not isinstance(answers, list):
        return [(None, ("missing_field", "no answers list"))]
    drops: list[tuple[None, object]] = []
    texts, scores = [], []
    for k, a in enumerate(answers, start=1):
        text = a.get("text") if isinstance(a, dict) else None
        score = a.get("pm_score") if isinstance(a, dict) else None
        if not isinstance(text, str) or isinstance(score, bool) or not isinstance(score, (int, float)):
            return [(None, ("malformed", f"answer {k} is not an object with a text string and a numeric pm_score"))]
        text = render_html(text, html)
        if not text:
            drops.append((None, "empty_answer"))
            continue
        texts.append(text)
        scores.append(score)
    if len(texts) < 2:
        return drops + [(None, "too_few_answers")]
    if len(set(scores)) == 1:
        return drops + [(None, "equal_scores")]
    pairs = []
    for i, j in score_pairs(scores):
        if texts[i] == texts[j]:
            drops.append((None, "identical"))
        else:
            pairs.append((i, j))
    qid = row.get("qid")
    kept = cap_pairs(pairs, pairs_per_prompt, f"{seed}:{qid if qid is not None else question}")
    drops += [(None, "over_pairs_per_prompt")] * (len(pairs) - len(kept))
    prompt = [{"role": "user", "content": render_html(question, html)}]
    return [({"prompt": prompt, "chosen": texts[i], "rejected": texts[j]}, None) for i, j in kept] + drops


def is_question_row(row: dict) -> bool:
    return "question" in row and isinstance(row.get("answers"), list)


def options_from_config(c) -> dict:
    """The loader options of a data config (or eval-set spec): ``html``, ``pairs_per_prompt`` and the
    pair-sampling ``seed`` (``data.pairs_seed``)."""
    return {"html": c.get("html") or "text", "pairs_per_prompt": c.get("pairs_per_prompt"),
            "seed": int(c.get("pairs_seed") or 0)}
