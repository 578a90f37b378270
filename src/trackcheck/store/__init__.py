"""The state database: runs, stages, polls, snapshots, plans, schedules, captures; the typed rows of a tick."""
