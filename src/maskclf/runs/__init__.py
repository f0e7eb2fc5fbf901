"""Run directories: every file name of a run, the one-process lock, the leaderboard."""
