"""How people reach jaxstyle: the Python API, the command line, the web page, and the benchmarks."""
