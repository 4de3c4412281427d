"""Host-side tools of the accelerator: compiler, cycle model, command-line interface."""
