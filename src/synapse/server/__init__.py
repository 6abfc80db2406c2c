"""The gateway process: application assembly, lifecycle (drain, reload), the serve command."""
