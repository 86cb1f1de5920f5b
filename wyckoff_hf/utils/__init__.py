"""Process-level helpers shared by the jobs: process pools, lazy imports, argument checks, Hub pre-flight checks."""
