"""Every scenario by name: the ones compared with procServ 2.7.0, and those compared with 2.8.0's fixtures."""

from __future__ import annotations

from collections.abc import Sequence

from .cli import scenario_cli_errors
from .greeting import scenario_greeting, scenario_greeting_logfile, scenario_info_file, scenario_launch_messages
from .harness import Scenario
from .keys import scenario_ignore_chars, scenario_logout, scenario_nul_input, scenario_two_controls_and_logger
from .logfile import scenario_logfile
from .restart import (
    scenario_exit_codes,
    scenario_holdoff_timing,
    scenario_kill_restart,
    scenario_noautorestart_then_R_then_Q,
    scenario_oneshot,
    scenario_toggle,
    scenario_toggle_cycle,
    scenario_wait_mode,
)

SCENARIOS: dict[str, Scenario] = {
    "greeting": scenario_greeting,
    "launch_messages": scenario_launch_messages,
    "kill_restart": scenario_kill_restart,
    "toggle": scenario_toggle,
    "noautorestart_then_R_then_Q": scenario_noautorestart_then_R_then_Q,
    "wait_mode": scenario_wait_mode,
    "ignore_chars": scenario_ignore_chars,
    "nul_input": scenario_nul_input,
    "two_controls_and_logger": scenario_two_controls_and_logger,
    "logout": scenario_logout,
    "logfile": scenario_logfile,
    "info_file": scenario_info_file,
    "holdoff_timing": scenario_holdoff_timing,
    "cli_errors": scenario_cli_errors,
}

# procServ 2.8.0: the scenarios where its console differs from 2.7.0's. Besides these,
# ``greeting`` runs again (2.8.0 says "auto restart mode is").
SCENARIOS_2_8: dict[str, Scenario] = {
    "greeting": scenario_greeting,
    "greeting_logfile": scenario_greeting_logfile,
    "toggle_cycle": scenario_toggle_cycle,
    "oneshot": scenario_oneshot,
    "exit_codes": scenario_exit_codes,
}


async def run_scenario(name: str, server_cmd: Sequence[str]) -> dict[str, bytes]:
    return await SCENARIOS[name](server_cmd)
