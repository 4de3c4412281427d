"""cocotb testbenches, drivers, monitors and the runner that builds and caches simulators."""
