"""Transfer across clouds on their emulators, and a real network failure in the middle of an upload."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest
from conftest import write_tree
from dacflow import Repository
from dacflow.errors import StoreError
from dacflow.stores import open_store
from dacflow.transfer import clone, transfer
from emulators import Emulator


def test_delta_moves_edge_to_s3_to_gcs_to_azure(s3_env: str, gcs_env: str, azure_env: str, tmp_path: Path) -> None:
    edge = Repository.init(str(tmp_path / "edge"))
    files = {f"batch/device-{i}.bin": os.urandom(400_000) for i in range(5)}
    csv = b"".join(b"p%05d,%d,%d\n" % (i, 1700000000 + i, 60 + i % 90) for i in range(60_000))
    files["readings.csv"] = csv
    src = write_tree(tmp_path / "src", files)
    edge.snapshot(str(src), "main", "first batch")
    s3, gs, az = f"s3://{s3_env}/hub", f"gs://{gcs_env}/mirror", f"az://{azure_env}/mirror"
    Repository.init(s3)
    first = transfer(edge, s3)
    assert first.raw_bytes_sent >= sum(map(len, files.values()))
    _, to_gs = clone(s3, gs)
    _, to_az = clone(gs, az)
    assert to_gs.packs_copied_whole >= 1 and to_az.packs_copied_whole >= 1
    # Append 1% rows to the CSV: every hop sends about that much, not the dataset.
    extra = b"".join(b"p%05d,%d,%d\n" % (i, 1800000000 + i, 70) for i in range(600))
    with open(src / "readings.csv", "ab") as f:
        f.write(extra)
    head = edge.snapshot(str(src), "main", "second batch").commit
    for a, b in ((edge, s3), (s3, gs), (gs, az)):
        report = transfer(a, b)
        assert report.refs["branches/main"]["to"] == head
        assert report.raw_bytes_sent <= len(extra) + 1_100_000  # the appended bytes + the re-cut tail chunk(s)
        assert report.objects_skipped > 0
    for url in (s3, gs, az):
        repo = Repository.open(url)
        assert repo.head("main") == head and repo.check(read_data=True).ok
        assert repo.read_file("main", "readings.csv") == csv + extra
    # A fresh region pulls from Azure with GCS as a second source: both serve data.
    local = Repository.init(str(tmp_path / "eu"))
    pulled = transfer(az, local, sources=[gs])
    assert local.head("main") == head and len(pulled.by_source) == 2


class DropProxy:
    """A TCP proxy on 127.0.0.1 that cuts the first `drops` connections after `after` request bytes."""

    def __init__(self, upstream_port: int, after: int, drops: int) -> None:
        self.upstream_port, self.after, self.drops = upstream_port, after, drops
        self.dropped = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                cut = self.dropped < self.drops
            threading.Thread(target=self._pump, args=(client, upstream, cut), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, cut: bool) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if cut and sent + len(data) > self.after:
                    with self._lock:
                        self.dropped += 1
                    for s in (src, dst):
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        s.close()
                    return
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("drops", [1, 1000])
def test_connection_cut_mid_upload_leaves_nothing_partial(
    moto_server: Emulator, s3_env: str, tmp_path: Path, drops: int
) -> None:
    """A pack upload cut after 1 MiB: retried to success (one cut), or a typed error (every attempt cut) —
    either way no partial object is visible and no multipart upload is left behind."""
    import boto3

    direct = open_store(f"s3://{s3_env}/r", create=True)
    proxy = DropProxy(moto_server.port, after=1 << 20, drops=drops)
    try:
        store = open_store(f"s3://{s3_env}/r", endpoint_url=f"http://127.0.0.1:{proxy.port}", max_attempts=3)
        data = os.urandom(8 << 20)
        path = tmp_path / "pack.tmp"
        path.write_bytes(data)
        if drops == 1:
            store.put_file("packs/p", str(path))
            assert direct.get("packs/p") == data and proxy.dropped == 1
        else:
            with pytest.raises(StoreError):
                store.put_file("packs/p", str(path))
            assert direct.head("packs/p") is None and proxy.dropped >= 3
    finally:
        proxy.close()
    s3 = boto3.client("s3")
    assert s3.list_multipart_uploads(Bucket=s3_env).get("Uploads", []) == []
