"""The tooling around the hardware of ``hw/``: Verilog files and their cache, simulator builds
and runs, FPGA synthesis, logic depth, scaling and performance tables."""
