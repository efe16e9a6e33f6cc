"""Weights: Keras h5 conversion, validation, caching, resolution order and download."""
from __future__ import annotations

import hashlib
import http.server
import os
import struct
import threading

import numpy as np
import pytest

import reference as ref
from conftest import write_keras_h5
from jaxstyle.model import weights
from jaxstyle.errors import WeightsError


def test_converter_round_trips_keras_layout(synthetic_h5, synthetic_params, cache):
    params, info = weights.load(synthetic_h5)
    independent = ref.load_h5_params(str(synthetic_h5))
    assert set(params) == set(weights.LAYER_NAMES) == set(independent)
    for name, p in params.items():
        assert p["kernel"].dtype == np.float32 and p["kernel"].shape == weights.LAYER_SHAPES[name][0]
        np.testing.assert_array_equal(p["kernel"], synthetic_params[name]["kernel"])
        np.testing.assert_array_equal(p["bias"], synthetic_params[name]["bias"])
        np.testing.assert_array_equal(p["kernel"], independent[name][0].astype(np.float32))
    assert info.source == "--weights" and not info.official and info.warning is None
    assert info.note and "not Keras' official" in info.note and "\n" not in info.note
    assert weights.load(synthetic_h5)[1].note is None  # said once per file (the cache remembers)


def test_nested_keras2_layout_is_read(tmp_path, synthetic_params, cache):
    path = write_keras_h5(tmp_path / "nested.h5", synthetic_params, nested=True)
    params = weights.read_h5(path)
    np.testing.assert_array_equal(params["block3_conv2"]["kernel"], synthetic_params["block3_conv2"]["kernel"])


def test_conversion_is_cached_by_file_hash(synthetic_h5, cache, monkeypatch):
    _, info = weights.load(synthetic_h5)
    assert info.converted is not None and info.converted.is_file()
    assert info.sha256[:32] in info.converted.name

    def fail(_path):
        raise AssertionError("the h5 was parsed again")

    monkeypatch.setattr(weights, "read_h5", fail)
    params, info2 = weights.load(synthetic_h5)
    assert info2.converted == info.converted and len(params) == 13


def test_damaged_conversion_cache_is_rebuilt(synthetic_h5, cache):
    _, info = weights.load(synthetic_h5)
    info.converted.write_bytes(b"garbage")
    params, _ = weights.load(synthetic_h5)
    assert len(params) == 13 and info.converted.stat().st_size > 1000


@pytest.mark.parametrize("case, expect", [
    ("missing", "layer block3_conv2 is missing"),
    ("misshapen", "layer block4_conv1 has kernel (3, 3, 256, 256)"),
    ("nan", "layer block2_conv1 contains NaN"),
])
def test_bad_layers_are_refused_naming_the_layer(tmp_path, synthetic_params, cache, case, expect):
    if case == "missing":
        path = write_keras_h5(tmp_path / "w.h5", synthetic_params, skip="block3_conv2")
    elif case == "misshapen":
        k = np.zeros((3, 3, 256, 256), np.float32)
        path = write_keras_h5(tmp_path / "w.h5", synthetic_params,
                              override={"block4_conv1": (k, np.zeros(256, np.float32))})
    else:
        k = synthetic_params["block2_conv1"]["kernel"].copy()
        k[0, 0, 0, 0] = np.nan
        path = write_keras_h5(tmp_path / "w.h5", synthetic_params,
                              override={"block2_conv1": (k, synthetic_params["block2_conv1"]["bias"])})
    with pytest.raises(WeightsError, match=expect.replace("(", r"\(").replace(")", r"\)")):
        weights.load(path)


def test_truncated_and_non_h5_files_are_refused(tmp_path, synthetic_h5, cache):
    data = synthetic_h5.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match="trunc.h5"):
        weights.load(trunc)
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(WeightsError, match="not a readable HDF5"):
        weights.load(text)
    with pytest.raises(WeightsError, match="no such weights file"):
        weights.load(tmp_path / "absent.h5")


def test_resolution_order(tmp_path, synthetic_h5, cache, monkeypatch):
    assert weights.locate(synthetic_h5) == (synthetic_h5, "--weights")
    monkeypatch.setenv("JAXSTYLE_WEIGHTS", str(synthetic_h5))
    assert weights.locate(None) == (synthetic_h5, "JAXSTYLE_WEIGHTS")
    assert weights.locate(tmp_path / "x.h5")[1] == "--weights"  # explicit wins over the variable
    monkeypatch.delenv("JAXSTYLE_WEIGHTS")
    assert weights.locate(None) == (None, "download")
    cached = weights.cached_weights_path()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert weights.locate(None) == (cached, "cache")


def test_corrupt_cached_download_is_refused(cache):
    cached = weights.cached_weights_path()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the official file")
    with pytest.raises(WeightsError, match="delete it"):
        weights.load(None)


def test_offline_without_weights_says_how_to_supply_them(cache, monkeypatch):
    monkeypatch.setenv("JAXSTYLE_WEIGHTS_URL", "http://127.0.0.1:9/none.h5")
    with pytest.raises(WeightsError) as e:
        weights.load(None)
    msg = str(e.value)
    assert "--weights" in msg and "JAXSTYLE_WEIGHTS" in msg and "\n" not in msg
    assert not weights.cached_weights_path().exists()
    with pytest.raises(WeightsError, match="downloads disabled"):
        weights.load(None, allow_download=False)


class _Server:
    """A local HTTP server serving `payload`, optionally cutting the connection midway."""

    def __init__(self, payload: bytes, cut_at: int | None = None):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload if cut_at is None else payload[:cut_at])
                self.wfile.flush()
                if cut_at is not None:
                    self.connection.shutdown(2)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/w.h5"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        outer.payload = payload

    def close(self):
        self.httpd.shutdown()


def test_download_checks_md5_and_writes_atomically(tmp_path):
    payload = os.urandom(3 << 20)
    server = _Server(payload)
    try:
        seen = []
        dest = weights.download(server.url, tmp_path / "w.h5", md5=hashlib.md5(payload).hexdigest(),
                                progress=lambda d, t: seen.append((d, t)))
        assert dest.read_bytes() == payload
        assert seen[-1] == (len(payload), len(payload))
        with pytest.raises(WeightsError, match="MD5"):
            weights.download(server.url, tmp_path / "bad.h5", md5="0" * 32)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["w.h5"]
    finally:
        server.close()


def test_interrupted_download_leaves_nothing(tmp_path):
    payload = os.urandom(2 << 20)
    server = _Server(payload, cut_at=1 << 20)
    try:
        with pytest.raises(WeightsError):
            weights.download(server.url, tmp_path / "w.h5", md5=None)
        assert list(tmp_path.iterdir()) == []
    finally:
        server.close()


def test_download_used_when_nothing_else_is_found(tmp_path, synthetic_h5, cache, monkeypatch):
    payload = synthetic_h5.read_bytes()
    server = _Server(payload)
    monkeypatch.setenv("JAXSTYLE_WEIGHTS_URL", server.url)
    monkeypatch.setattr(weights, "OFFICIAL_MD5", hashlib.md5(payload).hexdigest())
    try:
        params, info = weights.load(None)
    finally:
        server.close()
    assert info.source == "download" and info.official and info.warning is None
    assert info.path == weights.cached_weights_path() and info.path.read_bytes() == payload
    _, again = weights.load(None)
    assert again.source == "cache"


class _RawServer:
    """A local TCP server on 127.0.0.1 that answers every connection with raw `reply` bytes
    (after reading the request), then closes it; `stall` keeps the connection open instead."""

    def __init__(self, reply: bytes, stall: bool = False, reset: bool = False):
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/w.h5"
        self.stop = threading.Event()
        self.conns = []

        def serve():
            while not self.stop.is_set():
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    continue
                self.conns.append(conn)
                conn.settimeout(5)
                request = b""
                while b"\r\n\r\n" not in request:
                    more = conn.recv(4096)
                    if not more:
                        break
                    request += more
                if reply:
                    conn.sendall(reply)
                if stall:
                    continue
                if reset:  # SO_LINGER 0: the close sends a RST
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


def _refused_url() -> str:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}/w.h5"


_OK = b"HTTP/1.1 200 OK\r\n"
_CHUNKED = _OK + b"Transfer-Encoding: chunked\r\n\r\n"


_DOWNLOAD_FAILURES = [
    ("not http", b"SSH-2.0-OpenSSH_9.6\r\n", {}, "reply is not HTTP"),
    ("binary garbage", bytes(range(256)) * 4, {}, "reply is not HTTP"),
    ("closed without reply", b"", {}, "closed the connection without replying"),
    ("chunked body cut off", _CHUNKED + b"100000\r\n" + b"x" * 5000, {}, "body broke off"),
    ("malformed chunk size", _CHUNKED + b"zz\r\nxx\r\n0\r\n\r\n", {}, "body broke off"),
    ("length body cut off", _OK + b"Content-Length: 9000\r\n\r\n" + b"x" * 100, {}, "stopped after 100 of 9000"),
    ("bad content-length", _OK + b"Content-Length: lots\r\n\r\nabc", {"md5": "0" * 32}, "has MD5"),
    ("header line too long", _OK + b"X-Junk: " + b"a" * 70000 + b"\r\n\r\n", {}, "malformed HTTP reply"),
    ("too many headers", _OK + b"X: y\r\n" * 200 + b"\r\n", {}, "malformed HTTP reply"),
    ("http 404", b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", {}, "HTTP 404 Not Found"),
    ("http 500", b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", {}, "HTTP 500 Oops"),
    ("no reply (timeout)", b"", {"stall": True, "timeout": 0.3}, "no data for 0.3 s (timed out)"),
    ("stalls mid-body", _OK + b"Content-Length: 100\r\n\r\n" + b"x" * 10, {"stall": True, "timeout": 0.3},
     "timed out"),
    ("connection reset", _OK + b"Content-Length: 100000\r\n\r\n" + b"x" * 10, {"reset": True}, ""),
    ("connection refused", None, {}, "connection refused"),
]


@pytest.mark.parametrize("case, reply, options, expect", _DOWNLOAD_FAILURES,
                         ids=[c[0] for c in _DOWNLOAD_FAILURES])
def test_download_failures_are_one_line_and_leave_nothing(tmp_path, case, reply, options, expect):
    options = dict(options)
    kwargs = {k: options.pop(k) for k in ("md5", "timeout") if k in options}
    kwargs.setdefault("md5", None)
    kwargs.setdefault("timeout", 5.0)
    server = _RawServer(reply, **options) if reply is not None else None
    url = server.url if server else _refused_url()
    dest_dir = tmp_path / "cache"
    try:
        with pytest.raises(WeightsError) as e:
            weights.download(url, dest_dir / "w.h5", **kwargs)
    finally:
        if server:
            server.close()
    msg = str(e.value)
    assert url in msg and expect in msg and "\n" not in msg and len(msg) < 600, msg
    assert list(dest_dir.iterdir()) == []  # no partial file, no temporary left behind


def test_download_to_an_unusable_cache_is_one_line(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    with pytest.raises(WeightsError, match="downloading http://127.0.0.1") as e:
        weights.download(_refused_url(), blocker / "w.h5", md5=None)
    assert "\n" not in str(e.value)
    assert blocker.read_text().startswith("a file")


def test_load_reports_a_failed_download_in_one_line(cache, monkeypatch):
    server = _RawServer(b"SSH-2.0-OpenSSH_9.6\r\n")
    monkeypatch.setenv("JAXSTYLE_WEIGHTS_URL", server.url)
    try:
        with pytest.raises(WeightsError, match="not HTTP") as e:
            weights.load(None)
    finally:
        server.close()
    assert "--weights" in str(e.value) and "\n" not in str(e.value)
    assert not weights.cached_weights_path().exists()
    assert [p.name for p in cache.iterdir()] == []
