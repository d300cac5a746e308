"""The pipeline stages as library functions; each CLI command is a thin layer over one."""
