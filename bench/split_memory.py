"""Per-core memory of one image split by rows over 1-8 cores of a TPU v2-8 (`--split-image`),
from XLA:TPU's deviceless compile (needs libtpu; run with JAX_PLATFORMS=cpu):

    JAX_PLATFORMS=cpu python bench/split_memory.py --size 1024 --size 2048
"""
import argparse
import time

from jaxstyle.images import preprocess
from jaxstyle.faces import targets
from jaxstyle.config import Config

parser = argparse.ArgumentParser()
parser.add_argument("--size", type=int, action="append")
parser.add_argument("--target", default="tpu-v2-8")
parser.add_argument("--cores", default="1,2,4,8")
args = parser.parse_args()
cores = targets.topology_devices(targets.target(args.target))
print("| size | cores | loop GiB per core | of one core's | compile s |")
print("| --- | --- | --- | --- | --- |")
for size in args.size or [1024]:
    hw = preprocess.fit_size((3, 4), size)
    first = None
    for n in (int(c) for c in args.cores.split(",")):
        t = time.perf_counter()
        try:
            need = targets.compile_for(Config(size=size, split_image=True), cores[:n], hw, hw, 1).loop_bytes()
        except Exception as e:  # a size one core cannot hold: XLA:TPU says so
            print(f"| {hw[1]}x{hw[0]} | {n} | does not fit ({str(e).splitlines()[0][:80]}) | | |")
            continue
        first = first or need
        print(f"| {hw[1]}x{hw[0]} | {n} | {need / 2**30:.2f} | {need / first:.2f} | {time.perf_counter() - t:.1f} |",
              flush=True)
