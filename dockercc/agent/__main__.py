import sys

from .early import spawn_from_env

# before the runner's imports: the CLI's start-up overlaps them (see .early)
_early = spawn_from_env()

from .runner import main  # noqa: E402

sys.exit(main(early=_early))
