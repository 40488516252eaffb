"""python -m fleet.agent --name gpu-a   (FLEET_CONSOLE_URL; the join token in FLEET_JOIN_TOKEN the first time)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from fleet.agent.runtime import Agent, AgentError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.agent", description="Fleet Console node agent")
    parser.add_argument("--name", required=True, help="node name: lower-case letters, digits, hyphens")
    parser.add_argument(
        "--interval",
        type=float,
        default=float(os.environ.get("FLEET_TELEMETRY_INTERVAL_S", 1.0)),
        help="seconds between telemetry samples (default 1)",
    )
    parser.add_argument(
        "--address",
        default=os.environ.get("FLEET_AGENT_ADDRESS", "127.0.0.1"),
        help="the address vLLM listens on and the console's gateway reaches (default 127.0.0.1)",
    )
    parser.add_argument("--heartbeat", type=float, default=5.0, help="seconds between heartbeats (default 5)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the agent keeps its identity (default $FLEET_AGENT_STATE_DIR or ~/.fleet-agent/<name>)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agent %(levelname)s %(message)s")

    console_url = os.environ.get("FLEET_CONSOLE_URL")
    if not console_url:
        print("agent: set FLEET_CONSOLE_URL to the console's agent URL (https://<console>:8443)", file=sys.stderr)
        return 2
    if not 0.1 <= args.interval <= 60:
        print("agent: --interval must be between 0.1 and 60 seconds", file=sys.stderr)
        return 2
    state_dir = args.state_dir or Path(
        os.environ.get("FLEET_AGENT_STATE_DIR") or Path.home() / ".fleet-agent" / args.name
    )
    try:
        agent = Agent(
            name=args.name,
            console_url=console_url,
            state_dir=state_dir,
            interval_s=args.interval,
            heartbeat_s=args.heartbeat,
            address=args.address,
        )
        agent.join(os.environ.get("FLEET_JOIN_TOKEN") or None)
    except AgentError as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: agent.stop.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stop.set())
    return agent.serve()


if __name__ == "__main__":
    sys.exit(main())
