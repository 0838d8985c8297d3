"""`roadnode agent --once` as the kill tests run it: the real agent, with the fake installer
(no real venv) and a fast health poll. Run from the repository root:

    python -m tests.fleet_agent_child STATE_DIR CONFIG
"""

from __future__ import annotations

import sys
from pathlib import Path

from node.config import Config
from node.fleet.agent import Agent, AgentOptions
from node.fleet.install import Hooks, command_restarter, control_probe
from tests.fleethelp import fake_installer


def main(argv: list[str]) -> int:
    state_dir, config = Path(argv[0]), Path(argv[1])

    def hooks(cfg: Config) -> Hooks:
        return Hooks(
            restart=command_restarter(cfg.fleet.restart_command),
            probe=control_probe(state_dir),
            installer=fake_installer,
            poll_s=0.05,
        )

    return Agent(AgentOptions(state_dir, config, once=True), fake_installer, hooks).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
