"""Pretrained-weight download, cache, integrity and offline behaviour (vmamba_zoo.hub).

A local HTTP server on 127.0.0.1 serves an official-format checkpoint (weights under
``model`` next to an optimizer state, numpy scalars and a pickled yacs ``CfgNode``,
as VMamba's release files are).  timm's cache is pointed at tmp_path via TORCH_HOME.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import sys
import threading
import types

import numpy as np
import pytest
import timm
import torch

import vmamba_zoo  # noqa: F401  (registers the zoo's models)
from vmamba_zoo import hub

MODEL = "test_mambaout"  # a tiny timm model: the mechanism under test is model-independent


class _Server:
    """Bounded threaded HTTP server: serves ``files``, counts requests, stops by itself."""

    def __init__(self, lifetime_s: float = 60.0):
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()  # paths answered with half the body (connection then closed)
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10

            def do_GET(self):  # noqa: N802 (http.server API)
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in server.truncate else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
        self.timer = threading.Timer(lifetime_s, self.httpd.shutdown)
        self.timer.daemon = True
        self.thread.start()
        self.timer.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self) -> None:
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.stop()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _official_checkpoint(monkeypatch) -> tuple[bytes, dict]:
    """Bytes of a VMamba-release-style checkpoint and the state dict inside it."""
    torch.manual_seed(0)
    sd = timm.create_model(MODEL).state_dict()
    yacs, yacs_config = types.ModuleType("yacs"), types.ModuleType("yacs.config")

    class CfgNode(dict):
        pass

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    yacs_config.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, "yacs", yacs)
    monkeypatch.setitem(sys.modules, "yacs.config", yacs_config)
    config = CfgNode(MODEL=CfgNode(NAME="vssm1_tiny_0230s", DROP_PATH_RATE=0.2))
    config.__dict__["frozen"] = True
    ckpt = {"model": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}, "epoch": 264,
            "max_accuracy": np.float64(82.6), "config": config}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    monkeypatch.delitem(sys.modules, "yacs.config")
    monkeypatch.delitem(sys.modules, "yacs")
    return buf.getvalue(), sd


def _assert_loaded(model, sd):
    got = model.state_dict()
    assert set(got) == set(sd)
    for k, v in sd.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0, msg=k)


def test_download_then_cache_hit(server, cache, monkeypatch):
    body, sd = _official_checkpoint(monkeypatch)
    server.files["/v2cls/vssm_official.pth"] = body
    overlay = dict(url=server.url("/v2cls/vssm_official.pth"))

    model = hub.create_model(MODEL, pretrained=True, pretrained_cfg_overlay=overlay)
    _assert_loaded(model, sd)
    assert server.requests == ["/v2cls/vssm_official.pth"]
    cached = cache / "vssm_official.pth"
    assert cached.read_bytes() == body
    assert (cache / "vssm_official.pth.sha256").read_text().split()[0] == hashlib.sha256(body).hexdigest()
    assert model.pretrained_cfg["file"] == str(cached) and "state_dict" not in model.pretrained_cfg

    model = hub.create_model(MODEL, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=7)
    assert len(server.requests) == 1, "a cache hit must not contact the server"
    assert model.get_classifier().out_features == 7  # timm's head reset still applies
    assert hub.weights_status(MODEL, overlay) == "cached"


@pytest.mark.parametrize("damage", ["flip-bytes", "truncate-without-digest-file"])
def test_corrupt_cache_is_detected_and_downloaded_again(server, cache, monkeypatch, damage):
    body, sd = _official_checkpoint(monkeypatch)
    server.files["/w/ckpt.pth"] = body
    src = hub.resolve_weight_source(MODEL, dict(url=server.url("/w/ckpt.pth")))
    path = hub.fetch_weights(src)
    assert len(server.requests) == 1
    data = bytearray(path.read_bytes())
    if damage == "flip-bytes":  # same size, caught by the recorded sha256
        data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
        path.write_bytes(bytes(data))
    else:  # e.g. left by an interrupted copy, no digest file: caught by the zip structure check
        path.write_bytes(bytes(data[: len(data) * 2 // 3]))
        (cache / "ckpt.pth.sha256").unlink()
    with pytest.raises(hub.CorruptWeightsError):
        hub.verify_file(path, src)

    sd2, path2 = hub.load_pretrained_state_dict(MODEL, dict(url=server.url("/w/ckpt.pth")))
    assert len(server.requests) == 2 and path2 == path and path.read_bytes() == body
    assert set(sd2) == set(sd)


def test_truncated_download_is_never_kept_and_a_retry_downloads_again(server, cache, monkeypatch):
    body, sd = _official_checkpoint(monkeypatch)
    server.files["/w/trunc.pth"] = body
    server.truncate.add("/w/trunc.pth")
    overlay = dict(url=server.url("/w/trunc.pth"))
    with pytest.raises(hub.CorruptWeightsError, match="run again"):
        hub.create_model(MODEL, pretrained=True, pretrained_cfg_overlay=overlay)
    assert len(server.requests) == 2  # one automatic retry
    assert not any(cache.iterdir()), "nothing half-downloaded may stay in the cache"

    server.truncate.clear()
    _assert_loaded(hub.create_model(MODEL, pretrained=True, pretrained_cfg_overlay=overlay), sd)
    assert len(server.requests) == 3


def test_offline_uses_cache_or_names_the_missing_file(server, cache, monkeypatch):
    body, sd = _official_checkpoint(monkeypatch)
    server.files["/w/off.pth"] = body
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    overlay = dict(url=server.url("/w/off.pth"))
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub.create_model(MODEL, pretrained=True, pretrained_cfg_overlay=overlay)
    msg = str(info.value)
    assert "off.pth" in msg and str(cache / "off.pth") in msg and overlay["url"] in msg and "\n" not in msg
    assert server.requests == []

    (cache).mkdir(parents=True, exist_ok=True)
    (cache / "off.pth").write_bytes(body)  # the user copies the file where the message says
    _assert_loaded(hub.create_model(MODEL, pretrained=True, pretrained_cfg_overlay=overlay), sd)
    assert server.requests == []


def test_unreachable_server_gives_a_clear_error(cache):
    dead = "http://127.0.0.1:9/none/w.pth"  # discard port: connection refused
    with pytest.raises(hub.WeightsUnavailableError, match="could not download"):
        hub.fetch_weights(hub.resolve_weight_source(MODEL, dict(url=dead)))


def test_declared_sha256_and_hash_prefix_are_enforced(server, cache, monkeypatch):
    body, _ = _official_checkpoint(monkeypatch)
    digest = hashlib.sha256(body).hexdigest()
    server.files["/w/a.pth"] = body
    bad = dict(url=server.url("/w/a.pth"), notes=("sha256=" + "0" * 64,))
    with pytest.raises(hub.CorruptWeightsError, match="expected 0000"):
        hub.fetch_weights(hub.resolve_weight_source(MODEL, bad))
    assert not (cache / "a.pth").exists()
    good = dict(url=server.url("/w/a.pth"), notes=(f"sha256={digest}", f"size={len(body)}"))
    assert hub.verify_file(hub.fetch_weights(hub.resolve_weight_source(MODEL, good)),
                           hub.resolve_weight_source(MODEL, good)) == "sha256"

    name = f"/w/b-{digest[:10]}.pth"  # torch.hub's file-name convention
    server.files[name] = body
    src = hub.resolve_weight_source(MODEL, dict(url=server.url(name)))
    assert src.hash_prefix == digest[:10]
    assert hub.verify_file(hub.fetch_weights(src), src) == "hash-prefix"


def test_unsafe_pickles_are_refused(tmp_path, monkeypatch):
    evil = types.ModuleType("evil_pkg")
    ran = []

    class Payload:
        def __reduce__(self):
            return (ran.append, ("executed",))

    Payload.__module__ = "evil_pkg"
    evil.Payload = Payload
    monkeypatch.setitem(sys.modules, "evil_pkg", evil)
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "extra": Payload()}, path)
    with pytest.raises(hub.WeightsError, match="refuses"):
        hub.load_checkpoint_file(path)
    assert ran == []


def test_safetensors_structure_check(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.randn(64, 64)}, str(path))
    assert hub.verify_file(path) == "structure"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(hub.CorruptWeightsError, match="bytes"):
        hub.verify_file(path)


def test_every_zoo_model_has_usable_pretrained_cfgs():
    """Each registered zoo architecture resolves; tags with weights carry license and provenance."""
    from vmamba_zoo.model_info import zoo_models

    names = zoo_models()
    assert names, "no vmamba_zoo model is registered with timm"
    cache_names = {}
    for arch in names:
        for name in [arch] + [m for m in timm.list_pretrained(arch + ".*")]:
            src = hub.resolve_weight_source(name)
            if src.kind == "none":
                continue
            cfg = timm.models.get_pretrained_cfg(name)
            assert cfg.license, f"{name}: pretrained cfg needs a license"
            assert cfg.origin_url or cfg.paper_ids, f"{name}: pretrained cfg needs origin_url or paper_ids"
            assert src.filename or src.kind == "hf-hub", name
            if src.kind == "url":
                other = cache_names.setdefault(src.filename, src.location)
                assert other == src.location, f"{name}: {src.location} and {other} share the cache file {src.filename}"


def test_url_without_a_file_name_gets_a_per_model_cache_name(cache):
    url = "https://drive.usercontent.google.com/download?id=abc&export=download"
    src = hub.resolve_weight_source(MODEL, dict(url=url))
    assert src.filename == "test_mambaout.pth" and src.cache_path == cache / "test_mambaout.pth"


def test_prepare_pretrained_cfg_for_family_create_functions(server, cache, monkeypatch):
    """The helper families call in their ``_create_*``: verified fetch, state dict handed to timm."""
    body, sd = _official_checkpoint(monkeypatch)
    server.files["/w/fam.pth"] = body
    cfg = hub.prepare_pretrained_cfg(MODEL, pretrained_cfg_overlay=dict(url=server.url("/w/fam.pth")))
    assert cfg.state_dict is not None and set(cfg.state_dict) == set(sd)
    model = timm.create_model(MODEL, pretrained=True, pretrained_cfg=cfg)
    hub.release_pretrained_state_dict(model)
    assert model.pretrained_cfg["state_dict"] is None
    _assert_loaded(model, sd)
    assert len(server.requests) == 1


def test_hf_hub_source_offline_uses_the_hf_cache(cache, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    torch.manual_seed(2)
    sd = timm.create_model(MODEL).state_dict()
    overlay = dict(hf_hub_id="zoo-test/tiny-weights", url=None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.WeightsUnavailableError, match="zoo-test/tiny-weights/model.safetensors"):
        hub.create_model(MODEL, pretrained=True, pretrained_cfg_overlay=overlay)
    assert hub.weights_status(MODEL, overlay) == "download"
    # the layout huggingface_hub leaves after a download
    repo = tmp_path / "hf" / "hub" / "models--zoo-test--tiny-weights"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    snap = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(snap / "model.safetensors"))
    assert hub.weights_status(MODEL, overlay) == "cached"
    _assert_loaded(hub.create_model(MODEL, pretrained=True, pretrained_cfg_overlay=overlay), sd)
