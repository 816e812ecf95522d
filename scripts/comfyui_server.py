"""A headless ComfyUI server (``main.py --cpu``) with this pack and the test-only pack on its custom-node path."""
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import comfyui_host

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Tiny models on CPU: one thread each; on a shared 2-core machine thread contention dominates otherwise.
SERVER_ENV = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="inversion_suite_server_"))
        nodes = self.dir / "custom_nodes"
        nodes.mkdir()
        (nodes / "inversion_suite").symlink_to(ROOT)
        (nodes / "inversion_suite_testing").symlink_to(ROOT / "tests" / "host_pack" / "inversion_suite_testing")
        (self.dir / "paths.yaml").write_text(f"inversion_suite_tests:\n  custom_nodes: {nodes}\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.dir / "server.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
             "--disable-auto-launch", "--base-directory", str(self.dir), "--database-url", "sqlite:///:memory:",
             "--extra-model-paths-config", str(self.dir / "paths.yaml"), "--preview-method", "none"],
            cwd=comfyui_host.comfyui_path(), stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **SERVER_ENV})
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited:\n{self.text_log()}")
            try:
                self.get("/system_stats")
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not start:\n{self.text_log()}")

    def text_log(self):
        self.log.flush()
        return (self.dir / "server.log").read_text()

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path, body):
        req = urllib.request.Request(self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def run_prompt(self, prompt, timeout=300):
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": "inversion-suite-tests"})
        if status != 200:
            return status, body
        pid = body["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{pid}")
            if pid in history and history[pid].get("status", {}).get("completed") is not None:
                if history[pid]["status"]["status_str"] in ("success", "error"):
                    return 200, history[pid]
            time.sleep(0.3)
        raise TimeoutError(f"prompt {pid} did not finish")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
