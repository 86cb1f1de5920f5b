"""Process-level helpers shared by the jobs: process pools, lazy imports, argument and device checks, Hub
pre-flight checks."""
