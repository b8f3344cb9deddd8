"""How many answers a max length cuts (issue 22: choose data.max_length so that most answers are kept).

For every (prompt, answer) of a data config, tokenised as training sees it (the model's tokenizer,
chat template or the plain template, :class:`ser.data.formatting.Formatter`), and each max length:
the share of texts that are cut at all (the prompt loses its start: the answer is whole) and the
share whose answer itself is cut at its end (the answer alone does not fit: what a reward model
judging that pair cannot see). Both answers of a pair count.

    python experiments/answer_cut.py experiment=ser_alpaca_eval_minilm --lengths 128,256,384,512
    python experiments/answer_cut.py experiment=ser_alpaca_eval_minilm data.limit=5000

Prints one line per length (with the mean tokens per text after the cut: the compute it costs) and
the median/90th percentile of the full and answer-only lengths.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import compose  # noqa: E402
from ser.data.formats import load_pairs  # noqa: E402
from ser.data.formatting import Formatter  # noqa: E402
from ser.data.stack_exchange import options_from_config  # noqa: E402
from ser.model import load_tokenizer  # noqa: E402


def lengths(fmt: Formatter, pairs: list[dict], sides=("chosen", "rejected")) -> tuple[np.ndarray, np.ndarray]:
    """Per (pair, side): (tokens of the whole text, tokens from the answer's start to the end)."""
    total, answer = [], []
    for p in pairs:
        for side in sides:
            text, start = fmt.text(p["prompt"], p[side])
            offs = fmt.tok(text, add_special_tokens=not fmt.chat, return_offsets_mapping=True)["offset_mapping"]
            n = len(offs)
            first = next((i for i, o in enumerate(offs) if tuple(o) != (0, 0) and o[0] >= start), n)
            total.append(n)
            answer.append(n - first)
    return np.asarray(total), np.asarray(answer)


def cut_shares(total: np.ndarray, answer: np.ndarray, max_length: int) -> dict:
    """``{"cut": share cut at all, "answer_cut": share whose answer (with the special tokens after
    it) is longer than max_length, so it is cut at its end, "mean_tokens": tokens per text after the
    cut (what the model computes on, before padding)}`` (Formatter's rule)."""
    return {"cut": float(np.mean(total > max_length)), "answer_cut": float(np.mean(answer > max_length)),
            "mean_tokens": float(np.mean(np.minimum(total, max_length)))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=ser_alpaca_eval_minilm")
    ap.add_argument("--lengths", default="128,256,384,512")
    args = ap.parse_args(argv)
    cfg = compose(args.overrides)
    c = cfg.data
    pairs, rep = load_pairs(c.files, c.format, c.get("data_dir"), c.get("hub_id"), c.get("hub_config"),
                            c.get("hub_split", "train"), c.get("hub_data_dir"), c.get("limit"),
                            dict(c.columns) if c.get("columns") else None, options_from_config(c))
    tok = load_tokenizer(cfg.model)
    fmt = Formatter(tok, 10**9, c.template, c.use_chat_template, c.overlength)
    total, answer = lengths(fmt, pairs)
    print(f"{c.name}, model {cfg.model.name_or_path}: {len(pairs)} pairs ({rep.line()}), {len(total)} answers; "
          f"tokens per text median {np.median(total):.0f}, p90 {np.percentile(total, 90):.0f}; "
          f"answer alone median {np.median(answer):.0f}, p90 {np.percentile(answer, 90):.0f}")
    for m in (int(x) for x in args.lengths.split(",")):
        s = cut_shares(total, answer, m)
        print(f"max_length {m:>5}: texts cut {100 * s['cut']:5.1f}% (prompt's start), "
              f"answers cut at their end {100 * s['answer_cut']:5.1f}%, tokens per text after the cut {s['mean_tokens']:.0f}")


if __name__ == "__main__":
    main()
