"""Formatting and tokenisation of one (prompt, answer): :class:`Formatter` turns prompt messages and
an answer into one model's token ids (its chat template, or the plain ``template`` with
:func:`render_plain_prompt`), cutting an over-long prompt from the left and keeping the answer.
"""
from __future__ import annotations

from ser.errors import DataError


def render_plain_prompt(messages: list[dict]) -> str:
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names.get(m['role'], m['role'])}: {m['content']}" for m in messages)


class Formatter:
    """Turns (prompt messages, answer) into token ids for one model, keeping the answer.

    Decoders with a chat template use it; other models use ``template`` (the authors'
    ``"Question: {q}\\n\\nAnswer: {a}"``). When too long, the prompt is cut from the left; an answer
    that cannot fit alone is cut at its end (``overlength='truncate'``) or the pair is dropped
    (``overlength='drop'``, the authors' choice).
    """

    def __init__(self, tokenizer, max_length: int = 512, template: str = "Question: {q}\n\nAnswer: {a}",
                 use_chat_template: bool = True, overlength: str = "truncate"):
        if overlength not in ("truncate", "drop"):
            raise DataError(f"data.overlength='{overlength}' must be 'truncate' or 'drop'")
        if "{q}" not in template or "{a}" not in template or not template.rstrip().endswith("{a}"):
            raise DataError(f"data.template='{template}' must contain {{q}} and end with {{a}}")
        self.tok = tokenizer
        self.max_length = int(max_length)
        self.template = template
        self.chat = bool(use_chat_template and getattr(tokenizer, "chat_template", None))
        self.overlength = overlength

    def text(self, messages: list[dict], answer: str) -> tuple[str, int]:
        """Full text and the character offset where the answer starts."""
        if self.chat:
            prefix = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            full = self.tok.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
            if full.startswith(prefix):
                return full, len(prefix)
            return full, max(full.rfind(answer), 0)
        prefix = self.template[: self.template.index("{a}")].replace("{q}", render_plain_prompt(messages))
        return prefix + answer, len(prefix)

    def encode(self, messages: list[dict], answer: str) -> tuple[list[int] | None, str | None]:
        """Token ids, and ``'truncated'``/``'answer_truncated'``/``'overlength'`` when cut or dropped."""
        ids, offs, answer_start = self._tokens(messages, answer)
        n, m = len(ids), self.max_length
        if n <= m:
            return ids, None
        if self.overlength == "drop":
            return None, "overlength"
        lead, trail, start = self._bounds(offs, answer_start)
        excess = n - m
        if excess <= start - lead:
            return ids[:lead] + ids[lead + excess:], "truncated"
        keep_prompt = min(start - lead, m // 4)  # answer alone too long: keep some context, cut its end
        body = ids[start - keep_prompt: n - trail]
        body = body[: m - lead - trail]
        return ids[:lead] + body + ids[n - trail:], "answer_truncated"

    def encode_pair(self, messages: list[dict], a: str, b: str) -> tuple[tuple[list[int] | None, str | None], ...]:
        """Both answers of one prompt with the prompt cut the same for both (``data.prompt_cut=pair``).

        The longer side decides: both lose the same prompt tokens from the left, so the two keep the
        same prompt tail and share it as a prefix (what ``data.prefix_sharing`` runs once); the shorter
        side then has fewer than ``max_length`` tokens and less context than :meth:`encode` would give it.
        When the longer answer cannot fit even with its prompt cut away, or with ``overlength='drop'``,
        each side is encoded on its own (:meth:`encode`). ``(ids, cut)`` of each side.
        """
        ta, tb = self._tokens(messages, a), self._tokens(messages, b)
        excess = max(len(ta[0]), len(tb[0])) - self.max_length
        if excess <= 0:
            return (ta[0], None), (tb[0], None)
        ba, bb = self._bounds(ta[1], ta[2]), self._bounds(tb[1], tb[2])
        if self.overlength == "drop" or excess > min(ba[2] - ba[0], bb[2] - bb[0]):
            return self.encode(messages, a), self.encode(messages, b)
        return tuple((ids[:lead] + ids[lead + excess:], "truncated") for (ids, _, _), (lead, _, _) in ((ta, ba), (tb, bb)))

    def _tokens(self, messages: list[dict], answer: str) -> tuple[list[int], list, int]:
        """Uncut token ids, their character offsets, and where the answer starts in the text."""
        text, answer_start = self.text(messages, answer)
        enc = self.tok(text, add_special_tokens=not self.chat, return_offsets_mapping=True)
        return enc["input_ids"], enc["offset_mapping"], answer_start

    @staticmethod
    def _bounds(offs, answer_start: int) -> tuple[int, int, int]:
        """Leading and trailing special tokens (empty offsets: [CLS], <bos>, ...) and the answer's first token."""
        n = len(offs)
        lead = 0
        while lead < n and tuple(offs[lead]) == (0, 0):
            lead += 1
        trail = 0
        while trail < n - lead and tuple(offs[n - 1 - trail]) == (0, 0):
            trail += 1
        start = next((i for i in range(lead, n - trail) if offs[i][0] >= answer_start), n - trail)
        return lead, trail, start
