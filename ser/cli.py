"""``ser``: the command line.

    ser report RUN_OR_SWEEP_DIR [--out DIR]   tables and figures of one run or a whole sweep
    ser train [HYDRA OVERRIDES...]            same as ``python -m ser.train OVERRIDES...``
    ser ppo [HYDRA OVERRIDES...]              same as ``python -m ser.ppo OVERRIDES...``
    ser evaluate-policy --run PPO_DIR --judge RM   win rate of a PPO policy against its start
    ser best-of-n --policy P --reward-model RM --judge RM   best-of-N sampling, judged the same way
    ser bundle RUN_OR_SWEEP_DIR BUNDLE_DIR    the runs' small files (no weights), for publishing
    ser evaluate-rm --model RM (--data FILE | --data-config NAME)   accuracy (CI), subsets, best-of-N,
                                              length bias and calibration of any reward model
    ser acquire RUN [--out FILE]              the pairs a run asks humans to label, as a preference file
    ser cache list|clear [KEY...] [--kind K] [--older-than DAYS] [--dir DIR]   the phase reuse cache

Subcommands live in ``COMMANDS`` (name -> ``Command``); add new ones there.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Command:
    help: str
    #: adds the subcommand's arguments to its parser
    configure: Callable[[argparse.ArgumentParser], None]
    #: runs it; returns the exit status
    run: Callable[[argparse.Namespace], int]
    #: True: everything after the subcommand's name is handed on untouched (as ``args.rest``),
    #: e.g. Hydra overrides and Hydra's own flags (``--cfg job``, ``--multirun``, ``--help``)
    passthrough: bool = False
    description: str | None = None


# -- report ------------------------------------------------------------------------------------
def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="RUN_OR_SWEEP_DIR",
                   help="a run folder (outputs/train/...), a Hydra multirun folder, or any folder holding runs")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="where report.md, runs.csv and the PNG figures go (default: RUN_OR_SWEEP_DIR/report)")
    p.add_argument("--n-boot", type=int, default=None, metavar="N",
                   help="bootstrap resamples of every CI in the report (default: ser.significance.N_BOOT, 10000)")
    p.add_argument("--power", action="store_true",
                   help="add a table of the test pairs x seeds needed to detect a +2 and a +4 point SER gain with "
                        "80%% power, from the measured per-pair variance and seed spread of these runs")


def _report(args: argparse.Namespace) -> int:
    from ser.report import write_report
    from ser.significance import N_BOOT

    write_report(args.path, args.out, n_boot=args.n_boot or N_BOOT, power=args.power)
    return 0


# -- train -------------------------------------------------------------------------------------
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("rest", nargs="*", metavar="OVERRIDE",
                   help="Hydra overrides, e.g. experiment=ser_hh_minilm seed=1 (all of `python -m ser.train`)")


def _train(args: argparse.Namespace) -> int:
    os.execv(sys.executable, [sys.executable, "-m", "ser.train", *args.rest])
    return 0  # not reached


# -- ppo ---------------------------------------------------------------------------------------
def _ppo(args: argparse.Namespace) -> int:
    os.execv(sys.executable, [sys.executable, "-m", "ser.ppo", *args.rest])
    return 0  # not reached


# -- evaluate-policy / best-of-n ------------------------------------------------------------------
def _evaluate_policy_args(p: argparse.ArgumentParser) -> None:
    from ser.evaluate import add_common_args

    p.add_argument("--run", metavar="PPO_DIR", help="a finished PPO stage (<run>/ppo): its policy, starting policy "
                                                    "and held-out prompts are the defaults")
    p.add_argument("--policy", help="trained policy: a saved folder or hub id (default: PPO_DIR/policy)")
    p.add_argument("--base", help="starting policy, also the KL reference: folder, hub id or a conf/ppo option "
                                  "such as smollm2 (default: the start recorded in PPO_DIR/ppo.json)")
    p.add_argument("--judge", required=True, help="judge reward model folder (e.g. the full-data reward model)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    add_common_args(p)


def _evaluate_policy(args: argparse.Namespace) -> int:
    from ser.evaluate import cli_evaluate_policy

    return cli_evaluate_policy(args)


def _best_of_n_args(p: argparse.ArgumentParser) -> None:
    from ser.evaluate import add_common_args

    p.add_argument("--run", metavar="PPO_DIR", help="take the policy and held-out prompts of a finished PPO stage")
    p.add_argument("--policy", help="policy to sample from: folder, hub id or a conf/ppo option such as smollm2")
    p.add_argument("--reward-model", required=True, help="reward model that picks the best of N")
    p.add_argument("--judge", help="judge reward model (default: the --reward-model itself)")
    p.add_argument("--n", type=int, default=4, help="samples per prompt (default 4)")
    add_common_args(p)


def _best_of_n(args: argparse.Namespace) -> int:
    from ser.evaluate import cli_best_of_n

    return cli_best_of_n(args)


# -- evaluate-rm -------------------------------------------------------------------------------
def _evaluate_rm_args(p: argparse.ArgumentParser) -> None:
    from ser.rm_eval import add_args

    add_args(p)


def _evaluate_rm(args: argparse.Namespace) -> int:
    from ser.rm_eval import cli_evaluate_rm

    return cli_evaluate_rm(args)


# -- acquire -----------------------------------------------------------------------------------
def _acquire_args(p: argparse.ArgumentParser) -> None:
    from ser.acquire import add_args

    add_args(p)


def _acquire(args: argparse.Namespace) -> int:
    from ser.acquire import cli_acquire

    return cli_acquire(args)


# -- cache -------------------------------------------------------------------------------------
def _cache_args(p: argparse.ArgumentParser) -> None:
    from ser.reuse import add_cache_args

    add_cache_args(p)


def _cache(args: argparse.Namespace) -> int:
    from ser.reuse import cli_cache

    return cli_cache(args)


# -- bundle ------------------------------------------------------------------------------------
def _bundle_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="RUN_OR_SWEEP_DIR", help="a run folder or a sweep folder")
    p.add_argument("out", metavar="BUNDLE_DIR", help="where the runs' small files go (e.g. docs/results/NAME/runs)")


def _bundle(args: argparse.Namespace) -> int:
    from ser.bundle import write_bundle

    runs = write_bundle(args.path, args.out)
    size = sum(f.stat().st_size for r in runs for f in r.rglob("*") if f.is_file())
    print(f"bundled {len(runs)} finished runs into {args.out} ({size / 1e6:.1f} MB); `ser report {args.out}` "
          "regenerates their tables")
    return 0


# -- the subcommands ---------------------------------------------------------------------------
COMMANDS: dict[str, Command] = {
    "report": Command(
        help="tables (report.md, runs.csv) and figures of a run or a sweep",
        description="Summarise finished runs (per-run table, Table 1 per configuration with mean ± std over "
                    "seeds), list unfinished runs with what is missing, and draw the accuracy, pairs and "
                    "score-gap figures.",
        configure=_report_args, run=_report),
    "train": Command(
        help="train a reward model with the SER loop (python -m ser.train OVERRIDES...)",
        configure=_train_args, run=_train, passthrough=True),
    "ppo": Command(
        help="PPO of a policy with an exported reward model (python -m ser.ppo OVERRIDES...)",
        configure=_train_args, run=_ppo, passthrough=True),
    "evaluate-policy": Command(
        help="win rate of a trained policy against its starting policy, judged by a reward model",
        description="Sample one response per held-out prompt from the trained and the starting policy, score both "
                    "with the judge reward model; report win/tie/loss rates, the mean judge reward of each and the "
                    "KL of the trained policy to the starting one.",
        configure=_evaluate_policy_args, run=_evaluate_policy),
    "best-of-n": Command(
        help="best-of-N sampling with a reward model, judged against a single sample",
        configure=_best_of_n_args, run=_best_of_n),
    "evaluate-rm": Command(
        help="accuracy of any reward model on a preference file, with its CI, subsets, best-of-N, length bias, ECE",
        description="Score a Hugging Face sequence-classification reward model (an export of ser reads its "
                    "formatting from ser_reward.json) on any preference file ser reads or a conf/data option; print "
                    "and save (rm_eval.json, rm_eval.md) the pairwise accuracy with a bootstrap CI, per-subset "
                    "accuracy and RewardBench's section scores when the file has a subset column, best-of-N "
                    "accuracy for rows with several rejected answers (RewardBench 2), accuracy split by whether the "
                    "chosen answer is the longer one, and the calibration error of sigmoid(r_chosen - r_rejected).",
        configure=_evaluate_rm_args, run=_evaluate_rm),
    "acquire": Command(
        help="write the pairs a run asks humans to label (acquisition) as a preference file",
        description="Write the pairs the run's last loop requested (acquisition=random|uncertain|disagree), or that "
                    "--rule would request from its last pool scores (a run without acquisition, --count N), as JSON "
                    "lines: pair_id, prompt, chosen, rejected (the two answers in canonical order, no preference), "
                    "order=unlabelled. Label them as rows {pair_id, winner: chosen|rejected} and resume the run "
                    "with acquisition.oracle=file acquisition.answers=FILE.",
        configure=_acquire_args, run=_acquire),
    "cache": Command(
        help="list or clear the phase reuse cache (reuse.dir)",
        description="list: one line per entry (kind, key, size, when published, model/data/seed, valid or not) "
                    "and the total; clear: remove all entries, or those of --kind, --older-than DAYS or the KEYs "
                    "given, and print what it freed. Entries a run is computing or reading are kept.",
        configure=_cache_args, run=_cache),
    "bundle": Command(
        help="copy the small files of finished runs (results, loops, per-pair scores; no weights) for publishing",
        description="Copy results.json, loops.jsonl and the eval/pool score .npz files of every finished run under "
                    "RUN_OR_SWEEP_DIR into BUNDLE_DIR, keeping the run folder names: `ser report BUNDLE_DIR` then "
                    "regenerates the same tables without the run folders (ser/bundle.py).",
        configure=_bundle_args, run=_bundle),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ser", description="Self-Evolved Reward Learning (SER).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.description or cmd.help)
        cmd.configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ser.errors import ModelNotFound
    from ser.report import ReportError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] in COMMANDS and COMMANDS[argv[0]].passthrough:
        cmd, args = COMMANDS[argv[0]], argparse.Namespace(command=argv[0], rest=argv[1:])
    else:
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help(sys.stderr)
            return 2
        cmd = COMMANDS[args.command]
    try:
        return cmd.run(args)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ModelNotFound as e:
        if args.command == "evaluate-rm":
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # ConfigError, DataError, bad arguments: one line, no traceback
        if args.command in ("evaluate-policy", "best-of-n", "evaluate-rm", "acquire"):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
