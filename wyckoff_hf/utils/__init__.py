"""Process-level helpers shared by the jobs (process pools)."""
