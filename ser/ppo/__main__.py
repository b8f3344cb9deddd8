"""``python -m ser.ppo OVERRIDES...``: runs :func:`ser.ppo.job.main`, the PPO stage as a follow-up
job on an exported reward model (``ser ppo OVERRIDES...`` execs this)."""
from __future__ import annotations

if __name__ == "__main__":
    import ser.train  # noqa: F401  registers the ${ser_dirname:...} resolver used by the run folder
    from ser.ppo.job import main

    main()
