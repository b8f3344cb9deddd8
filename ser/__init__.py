"""ser: Self-Evolved Reward Learning. Importing the package registers the config schema
(``ser.schema``) with Hydra, so any ``compose`` of ``conf/`` validates against it."""
from ser import schema as _schema  # noqa: F401
