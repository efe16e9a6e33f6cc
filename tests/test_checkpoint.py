"""Checkpoint files: what they hold, and every kind of damage refused in one line without
allocating beyond the file (nothing here compiles: the states are hand-made)."""
from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile
from typing import NamedTuple

import numpy as np
import pytest

from jaxstyle.observers import checkpoint
from jaxstyle.config import Config
from jaxstyle.errors import InputError


class State(NamedTuple):
    u: np.ndarray
    history: np.ndarray
    iteration: np.ndarray
    evaluations: np.ndarray
    stopped: np.ndarray


PROVENANCE = {"mode": "transfer", "config": Config(size=32), "inputs": {"content": "/a.png", "styles": ["/b.png"]},
              "input_sha256": {"content": "0" * 64}, "weights_sha256": None, "weights_path": None,
              "output": "/o.png"}


def _state() -> State:
    rng = np.random.default_rng(0)
    u = rng.normal(0, 30, (24, 32, 3)).astype(np.float32)
    history = np.zeros((10, 24, 32, 3), np.float32)  # an L-BFGS history of 10 pairs, 3 filled
    history[:3] = rng.normal(0, 1e-3, (3, 24, 32, 3))
    return State(u, history, np.asarray(3, np.int32), np.asarray(4, np.int32), np.asarray(False))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "o.png.ckpt.npz"
    checkpoint.save(path, _state(), stage=1, offset=(5, 6), **PROVENANCE)
    return path


def _refused(path) -> str:
    with pytest.raises(InputError) as e:
        checkpoint.load(path)
    message = e.value.message
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


def _rezip(src, dst, header=None, entries=None) -> None:
    """A copy of checkpoint `src` with its header replaced (a dict or raw bytes) or entries changed."""
    with zipfile.ZipFile(src) as z:
        contents = {n: z.read(n) for n in z.namelist()}
    if header is not None:
        contents["header.json"] = header if isinstance(header, bytes) else json.dumps(header).encode()
    contents.update(entries or {})
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in contents.items():
            z.writestr(name, data, compress_type=zipfile.ZIP_STORED if name.endswith(".json") else
                       zipfile.ZIP_DEFLATED)


def test_round_trip_is_exact_and_compressed(good):
    ck = checkpoint.load(good)
    state = _state()
    assert ck.iteration == 3 and ck.evaluations == 4 and ck.stage == 1 and ck.offset == (5, 6)
    assert ck.config == Config(size=32) and ck.mode == "transfer" and ck.output == "/o.png"
    for a, b in zip(ck.leaves, state):
        assert a.dtype == np.asarray(b).dtype and a.shape == np.shape(b)
        np.testing.assert_array_equal(a, b)  # bit for bit: nothing is rounded
    raw = sum(np.asarray(x).nbytes for x in state)
    assert good.stat().st_size < 0.5 * raw  # the unfilled history and the exponents compress
    assert checkpoint.is_checkpoint(good)


def test_every_flipped_byte_is_one_line_damaged_refusal(good, tmp_path):
    data = good.read_bytes()
    bad = tmp_path / "flipped.ckpt.npz"
    positions = sorted({*range(0, len(data), max(1, len(data) // 150)), *range(len(data) - 120, len(data))})
    for pos in positions:
        flipped = bytearray(data)
        flipped[pos] ^= 0x10
        bad.write_bytes(bytes(flipped))
        try:
            ck = checkpoint.load(bad)
        except InputError as e:
            assert "damaged checkpoint" in e.message and "\n" not in e.message, (pos, e.message)
            continue
        # a flip that zipfile and the digest cannot see (an unused field of the archive) is harmless
        for a, b in zip(ck.leaves, _state()):
            np.testing.assert_array_equal(a, b)
    for length in (0, 10, len(data) // 3, len(data) - 22, len(data) - 1):
        bad.write_bytes(data[:length])
        assert "damaged checkpoint" in _refused(bad)


@pytest.mark.parametrize("case", [
    "version 2", "version 4", "version text", "format", "no header", "npz of version 2", "deep nesting",
    "not json", "leaves text", "iteration text", "offset short", "config list", "config unknown",
    "dtype object", "missing leaf", "digest"])
def test_other_versions_and_malformed_headers(good, tmp_path, case):
    with zipfile.ZipFile(good) as z:
        header = json.loads(z.read("header.json"))
    bad = tmp_path / "bad.ckpt.npz"
    changes = {"version 2": {"version": 2}, "version 4": {"version": 4}, "version text": {"version": "3"},
               "format": {"format": "other"}, "leaves text": {"leaves": "abc"},
               "iteration text": {"iteration": "3"}, "offset short": {"offset": [1]},
               "config list": {"config": [1, 2]}, "config unknown": {"config": {"colour": 1}},
               "dtype object": {"leaves": [{"dtype": "object", "shape": [3]}] * len(header["leaves"])},
               "digest": {"digest": "0" * 64}}
    if case in changes:
        _rezip(good, bad, {**header, **changes[case]})
    elif case == "deep nesting":
        _rezip(good, bad, b"[" * 100000 + b"]" * 100000)
    elif case == "not json":
        _rezip(good, bad, b"\xff\xfe{not json")
    elif case == "no header":
        with zipfile.ZipFile(bad, "w") as z:
            z.writestr("leaf_0000.bin", b"1234")
    elif case == "npz of version 2":
        np.savez(bad, header=np.frombuffer(b'{"format": "jaxstyle-checkpoint", "version": 2}', np.uint8))
    elif case == "missing leaf":
        with zipfile.ZipFile(good) as z, zipfile.ZipFile(bad, "w") as out:
            for name in z.namelist()[:-1]:
                out.writestr(name, z.read(name))
    message = _refused(bad)
    assert "damaged checkpoint" in message
    if case.startswith("version") or case == "npz of version 2":
        assert "version" in message


def _central_file_size_patched(data: bytes, name: bytes, size: int) -> bytes:
    """The archive with `name`'s uncompressed size in its central directory entry set to `size`."""
    end = data.rindex(b"PK\x05\x06")
    at = struct.unpack("<I", data[end + 16:end + 20])[0]  # the central directory's offset
    while data[at:at + 4] == b"PK\x01\x02":
        n, extra, comment = struct.unpack("<HHH", data[at + 28:at + 34])
        if data[at + 46:at + 46 + n] == name:
            return data[:at + 24] + struct.pack("<I", size) + data[at + 28:]
        at += 46 + n + extra + comment
    raise AssertionError(f"{name!r} not in the archive")


def test_a_leaf_claiming_1e11_floats_allocates_nothing(good, tmp_path):
    with zipfile.ZipFile(good) as z:
        header = json.loads(z.read("header.json"))
    big = tmp_path / "big.ckpt.npz"
    header["leaves"][1]["shape"] = [100_000_000_000]
    _rezip(good, big, header)
    zip_claims = tmp_path / "zip.ckpt.npz"  # the archive's own directory claims 4 GB for a leaf
    zip_claims.write_bytes(_central_file_size_patched(good.read_bytes(), b"leaf_0001.bin", 0xFFFF0000))
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as z:  # a deflate stream that really expands 1000x, under a short claim
        z.writestr("header.json", json.dumps({**header, "leaves": [{"dtype": "float32", "shape": [10]}]}))
        z.writestr("leaf_0000.bin", b"\0" * 50_000_000, compress_type=zipfile.ZIP_DEFLATED)
    bomb = tmp_path / "bomb.ckpt.npz"
    bomb.write_bytes(raw.getvalue())
    for path in (big, zip_claims, bomb):
        tracemalloc.start()
        try:
            message = _refused(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert "damaged checkpoint" in message
        assert peak < 4 * 2**20 + 2 * path.stat().st_size, (path.name, peak)
