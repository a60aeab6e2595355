"""README's nginx server block, run as documented in front of daphne: TLS, redirects, the websocket.

nginx gets exactly the block README's "Deploying behind nginx" section shows, with only its ports and
certificate paths substituted; daphne gets the production variables shown there. A reply's first
delta must reach the websocket client through nginx within 50 ms of the mock upstream writing it.
"""

import http.client
import json
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import time

import pytest
from websockets.sync.client import connect

from chat.mock_upstream import MockUpstream
from tests.live.servers import ROOT, migrate, server_env
from tests.processes import free_port, in_ci, stop
from tests.test_deploy import documented_environment

NGINX = "/usr/sbin/nginx"
HOST = "chat.example.com"
ORIGIN = f"https://{HOST}"  # what a browser on the standard port sends
MODEL = "mock/timed+ttft=150+gap=30+tokens=6"
FAST = "mock/fast+ttft=5+gap=1+tokens=2"
REPLIES = 7
IP_RATE_LIMIT = 8  # messages a minute per client address; the first-delta test sends REPLIES from 127.0.0.1
# README's production environment, as daphne gets it behind nginx (server_env brings its own SECRET_KEY).
PRODUCTION = {name: value for name, value in documented_environment().items() if name != "SECRET_KEY"}


def documented_block():
    """Return the nginx configuration README documents (the block after its `nginx-config` marker)."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- nginx-config[^>]*-->\s*```nginx\n(.*?)```", readme, re.S)
    assert found, "README has no nginx block after its <!-- nginx-config --> marker"
    return found.group(1)


def substitute(block, replacements):
    """Replace each documented value exactly once, so a README change cannot slip past the test."""
    for old, new in replacements.items():
        assert block.count(old) == 1, f"README's nginx block should contain {old!r} once"
        block = block.replace(old, new)
    return block


def self_signed(workdir):
    """Return (certificate, key) paths of a fresh certificate for HOST and 127.0.0.1."""
    cert, key = workdir / "fullchain.pem", workdir / "privkey.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={HOST}",
         "-addext", f"subjectAltName=DNS:{HOST},IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def wait_for_port(port, process, log, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args[0]} exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"nothing listens on {port} after {timeout} s:\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def upstream():
    """A mock of this module's own (not the package's): no stream of another module's ends in its counts."""
    mock = MockUpstream(ttft_ms=20, gap_ms=10, tokens=8)
    mock.start_in_thread()
    yield mock
    mock.stop()


@pytest.fixture(scope="module")
def site(upstream, tmp_path_factory):
    """Start daphne (production settings) and nginx (README's block) in front of it; yield the ports."""
    if not os.path.exists(NGINX):
        if in_ci():
            pytest.fail(f"{NGINX} is missing: scripts/install-nginx installs it")
        pytest.skip(f"{NGINX} is missing: run scripts/install-nginx")
    workdir = tmp_path_factory.mktemp("nginx")
    cert, key = self_signed(workdir)
    daphne_port, http_port, https_port = free_port(), free_port(), free_port()

    database_url = f"sqlite:///{workdir / 'chatsite.sqlite3'}"
    env = server_env(database_url, "", [MODEL, FAST], upstream.base_url + "/v1", CHAT_FLUSH_MS=30,
                     CHAT_IP_RATE_LIMIT=IP_RATE_LIMIT, STATIC_ROOT=str(workdir / "static"), **PRODUCTION)
    migrate(env)
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env,
                   check=True, timeout=300)
    daphne_log = workdir / "daphne.log"
    with open(daphne_log, "ab") as log:
        daphne = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(daphne_port), "chatsite.asgi:application"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    block = substitute(documented_block(), {
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{daphne_port};",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        f"/etc/letsencrypt/live/{HOST}/fullchain.pem": str(cert),
        f"/etc/letsencrypt/live/{HOST}/privkey.pem": str(key),
    })
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / name).mkdir()
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers can then read this test's files
    (workdir / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {workdir}/nginx.pid;\nerror_log {workdir}/nginx.log info;\n"
        "events { worker_connections 256; }\n"
        f"http {{\naccess_log {workdir}/access.log;\nclient_body_temp_path {workdir}/body;\n"
        f"proxy_temp_path {workdir}/proxy;\nfastcgi_temp_path {workdir}/fastcgi;\n"
        f"uwsgi_temp_path {workdir}/uwsgi;\nscgi_temp_path {workdir}/scgi;\n{block}\n}}\n"
    )
    nginx_log = workdir / "nginx.log"
    nginx = subprocess.Popen([NGINX, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-e", str(nginx_log)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for_port(daphne_port, daphne, daphne_log)
        wait_for_port(https_port, nginx, nginx_log)
        context = ssl.create_default_context(cafile=str(cert))
        yield {"http": http_port, "https": https_port, "tls": context, "logs": (daphne_log, nginx_log)}
    finally:
        stop(nginx)
        stop(daphne)
        shutil.rmtree(workdir / "static", ignore_errors=True)


def request(site, method, path, headers=None, tls=True, source="127.0.0.1"):
    """Send one request through nginx as `HOST` from the `source` address; return (status, headers, body)."""
    if tls:
        connection = http.client.HTTPSConnection("127.0.0.1", site["https"], context=site["tls"], timeout=20,
                                                 source_address=(source, 0))
    else:
        connection = http.client.HTTPConnection("127.0.0.1", site["http"], timeout=20, source_address=(source, 0))
    connection.request(method, path, headers={"Host": HOST, **(headers or {})})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, response.headers, body


def session_through(site, source="127.0.0.1"):
    """Load the page and ask for a session as the page's first send does; return the sessionid."""
    status, headers, _ = request(site, "GET", "/", source=source)
    assert status == 200 and "max-age=31536000" in headers["Strict-Transport-Security"]
    token = re.search(r"csrftoken=([^;]+)", headers["Set-Cookie"]).group(1)
    status, headers, body = request(site, "POST", "/session/", {
        "Cookie": f"csrftoken={token}", "X-CSRFToken": token, "Origin": ORIGIN, "Content-Length": "0"},
        source=source)
    assert status == 201, body
    cookie = headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie
    return re.search(r"sessionid=([^;]+)", cookie).group(1)


def socket_through(site, session, source="127.0.0.1"):
    sock = socket.create_connection(("127.0.0.1", site["https"]), timeout=10, source_address=(source, 0))
    return connect(f"wss://{HOST}:{site['https']}/ws/chat/", sock=sock, ssl=site["tls"], server_hostname=HOST,
                   origin=ORIGIN, additional_headers={"Cookie": f"sessionid={session}"}, proxy=None,
                   open_timeout=20, compression=None)


def test_it_redirects_plain_http_and_serves_hashed_static_files_for_a_year(site):
    status, headers, _ = request(site, "GET", "/c/1/?x=1", tls=False)
    assert status == 301 and headers["Location"] == f"https://{HOST}/c/1/?x=1"
    _, _, page = request(site, "GET", "/")
    script = re.search(rb'src="(/static/chat/chat\.[0-9a-f]{12}\.js)"', page)
    assert script, "the page should name its script by content hash"
    status, headers, _ = request(site, "GET", script.group(1).decode())
    assert status == 200 and "max-age=315360000" in headers["Cache-Control"] and "immutable" in headers["Cache-Control"]


def test_it_passes_the_first_delta_through_within_50_ms_of_the_upstream_writing_it(site, upstream):
    session = session_through(site)
    lags = []
    with socket_through(site, session) as ws:
        for _ in range(REPLIES):
            upstream.reset()
            ws.send(json.dumps({"type": "send", "content": "hello through nginx", "model": MODEL}))
            received = None
            while True:
                frame = json.loads(ws.recv(timeout=20))
                if frame["type"] == "delta" and received is None:
                    received = time.time()
                if frame["type"] == "done":
                    break
            assert frame["status"] == "completed", frame
            (record,) = upstream.stats()["log"]
            lags.append((received - record["first_token_at"]) * 1000)
    print(f"first delta through nginx, ms after the upstream wrote it: {sorted(round(x, 1) for x in lags)}")
    assert statistics.median(lags) < 50, lags


def test_it_refuses_a_socket_from_another_origin_through_the_proxy(site):
    session = session_through(site)
    sock = socket.create_connection(("127.0.0.1", site["https"]), timeout=10)
    with pytest.raises(Exception, match="403"):
        connect(f"wss://{HOST}:{site['https']}/ws/chat/", sock=sock, ssl=site["tls"], server_hostname=HOST,
                origin="https://evil.example", additional_headers={"Cookie": f"sessionid={session}"}, proxy=None)


def send_fast(ws):
    """Send one message; return the frame that answers it (`done`, or an `error` with no reply)."""
    ws.send(json.dumps({"type": "send", "content": "count me", "model": FAST}))
    while True:
        frame = json.loads(ws.recv(timeout=20))
        if frame["type"] in ("done", "error"):
            return frame


def test_it_limits_each_real_client_address_behind_the_proxy(site, upstream):
    # Every connection reaches daphne from nginx (127.0.0.1); CHAT_TRUSTED_PROXIES=127.0.0.1 makes
    # chatsite read the client's own address (127.0.0.2, 127.0.0.3) from X-Forwarded-For.
    upstream.reset()
    with socket_through(site, session_through(site, "127.0.0.2"), "127.0.0.2") as ws:
        for _ in range(IP_RATE_LIMIT):
            assert send_fast(ws)["status"] == "completed"
    # A fresh session (cookie dropped) from the same address is still over the address's limit...
    with socket_through(site, session_through(site, "127.0.0.2"), "127.0.0.2") as ws:
        frame = send_fast(ws)
        assert frame["type"] == "error" and frame["code"] == "rate_limited", frame
    assert upstream.stats(log=False)["requests"] == IP_RATE_LIMIT  # refused before any upstream request
    # ...while another client behind the same proxy is not.
    with socket_through(site, session_through(site, "127.0.0.3"), "127.0.0.3") as ws:
        assert send_fast(ws)["status"] == "completed"
