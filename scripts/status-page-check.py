"""The status page (`GET /`) in a real headless Chromium (run by
scripts/status-page-check).

Against a live `xrole serve --dev` with moto as AWS (scripts/devstack.py),
two organizations; the browser is Debian's Chromium driven by Debian's
chromedriver over the W3C WebDriver protocol (a few lines of urllib below).
Each check is a question an attacker or a user asks:

- sign in with an API key: the page lists the organization's links with their
  state, the pending link's quick-create button, the last jobs with progress;
- a link named like an XSS payload shows as text and runs nothing;
- the key lives in an HttpOnly, SameSite=Strict cookie, never in the URL or
  the server log; pages are `no-store`;
- a form on another origin cannot sign the browser out or into another
  organization (CSRF), and another origin cannot frame the page;
- the second organization sees none of the first one's links;
- signing out forgets the key.

A screenshot of the signed-in page is kept: the path is printed at the end.
"""

import base64
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from devstack import DevStack, free_port  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
# No background traffic (this machine has no network but the registries),
# root without a sandbox, a fixed window for the screenshot.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
         "--window-size=1280,900"]
XSS_NAME = '<img src=x onerror="document.title=\'pwned\'"> Acme prod'
RESULTS = {"passed": 0, "failed": 0}


def check(what, ok, detail=""):
    RESULTS["passed" if ok else "failed"] += 1
    print(f"    {'ok  ' if ok else 'FAIL'} {what}{'' if ok else ': ' + str(detail)}", flush=True)


class WebDriver:
    """Just the W3C WebDriver commands this check uses."""

    def __init__(self, port, profile):
        self.url = f"http://127.0.0.1:{port}"
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM,
                                   "args": FLAGS + [f"--user-data-dir={profile}"]}}}}
        self.session = self._send("POST", "/session", caps)["sessionId"]

    def _send(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.load(r)["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"webdriver {method} {path}: {e.read()[:500]!r}") from None

    def cmd(self, method, path, body=None):
        return self._send(method, f"/session/{self.session}{path}", body)

    def get(self, url):
        self.cmd("POST", "/url", {"url": url})

    def find(self, css):
        found = self.cmd("POST", "/elements", {"using": "css selector", "value": css})
        return [next(iter(e.values())) for e in found]

    def text(self, element):
        return self.cmd("GET", f"/element/{element}/text")

    def attr(self, element, name):
        return self.cmd("GET", f"/element/{element}/attribute/{name}")

    def type(self, element, text):
        self.cmd("POST", f"/element/{element}/value", {"text": text})

    def click(self, element):
        self.cmd("POST", f"/element/{element}/click", {})

    def title(self):
        return self.cmd("GET", "/title")

    def current_url(self):
        return self.cmd("GET", "/url")

    def source(self):
        return self.cmd("GET", "/source")

    def cookies(self):
        return self.cmd("GET", "/cookie")

    def frame(self, index):
        self.cmd("POST", "/frame", {"id": index})

    def parent(self):
        self.cmd("POST", "/frame/parent", {})

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.cmd("GET", "/screenshot")))

    def quit(self):
        try:
            self._send("DELETE", f"/session/{self.session}")
        except (RuntimeError, OSError):
            pass


def wait_for(what, pred, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def attacker_site(pages):
    """Another origin: serves `pages` (path -> HTML) on a port of its own."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://localhost:{server.server_address[1]}"


def sign_in(wd, base, key):
    wd.get(base + "/")
    field = wd.find("#api_key")
    if not field:
        raise SystemExit("status-page-check: no sign-in form at /")
    wd.type(field[0], key)
    wd.click(wd.find("form.login button")[0])
    wait_for("the status page", lambda: wd.find("#links"))


def main():
    bin_dir, out = sys.argv[1], os.path.abspath(sys.argv[2])
    shutil.rmtree(out, ignore_errors=True)
    # Verification fails at once against a role that does not exist.
    with DevStack(bin_dir, out, {"XROLE_ASSUME_PROPAGATION_SECONDS": "0",
                                 "XROLE_JOB_POLL_MILLISECONDS": "100"}) as stack:
        key_a, key_b = stack.org("acme"), stack.org("beta")
        pending = stack.call("POST", "/v1/aws-accounts", key_a,
                             {"name": XSS_NAME, "access_level": "provisioning",
                              "region": "eu-west-3"}, {"idempotency-key": "page-1"})
        other = stack.call("POST", "/v1/aws-accounts", key_a,
                           {"name": "Acme staging", "access_level": "read_only"},
                           {"idempotency-key": "page-2"})
        stack.call("PUT", f"/v1/aws-accounts/{other['id']}/role", key_a,
                   {"role_arn": "arn:aws:iam::123456789012:role/xrole-missing"})
        # The verification job runs (and fails: the role does not exist).
        wait_for("the job", lambda: stack.call("GET", "/v1/jobs", key_a)["data"][0]["state"]
                 in ("failed", "succeeded"), timeout=30)
        stack.call("POST", "/v1/aws-accounts", key_b,
                   {"name": "Beta only", "access_level": "read_only"},
                   {"idempotency-key": "page-3"})

        driver_port = free_port()
        driver = subprocess.Popen([CHROMEDRIVER, f"--port={driver_port}"],
                                  stdout=open(os.path.join(out, "chromedriver.log"), "w"),
                                  stderr=subprocess.STDOUT)
        base = stack.base
        # Another origin's pages: forms that post here by themselves, a frame.
        attacker, evil = attacker_site({
            "/logout.html": f"<form id=f method=post action='{base}/ui/logout'></form>"
                            "<script>document.getElementById('f').submit()</script>",
            "/login.html": f"<form id=f method=post action='{base}/ui/login'>"
                           f"<input name=api_key value='{key_b}'></form>"
                           "<script>document.getElementById('f').submit()</script>",
            "/frame.html": f"<iframe src='{base}/' width=800 height=600></iframe>",
        })
        wd = None
        try:
            time.sleep(0.5)
            wd = WebDriver(driver_port, os.path.join(out, "chromium-profile"))

            print("--> signed out: the sign-in form")
            wd.get(base + "/")
            check("GET / without a session shows the sign-in form", bool(wd.find("#api_key")))
            check("the key field is a password field",
                  wd.attr(wd.find("#api_key")[0], "type") == "password")

            print("--> a wrong key")
            wd.type(wd.find("#api_key")[0], "xrk_not_a_key")
            wd.click(wd.find("form.login button")[0])
            wait_for("the error", lambda: wd.find("p.error"))
            check("a wrong key is refused on the page", bool(wd.find("p.error")))

            print("--> signed in as the first organization")
            sign_in(wd, base, key_a)
            check("the page names the organization", "acme" in wd.text(wd.find("header")[0]))
            check("the key is not in the URL", key_a not in wd.current_url())
            rows = wd.find("#links tbody tr")
            check("both links are listed", len(rows) == 2, len(rows))
            texts = " ".join(wd.text(r) for r in rows)
            # moto checks no trust policy: the verification of the second
            # link ends `insecure` (or `failed`), never `pending`.
            states = [wd.text(e) for e in wd.find("#links tbody tr .state")]
            check("the links show their state", len(states) == 2 and "pending" in states
                  and any(s != "pending" for s in states), states)
            check("the XSS-shaped name shows as text", XSS_NAME in texts, texts)
            check("it made no element", not wd.find("#links img"))
            check("and ran nothing", wd.title() != "pwned", wd.title())
            button = wd.find(f"tr[data-link='{pending['id']}'] a.button")
            href = wd.attr(button[0], "href") if button else ""
            check("the pending link has its quick-create button", href.startswith(
                "https://console.aws.amazon.com/cloudformation/home?region=eu-west-3"
                "#/stacks/quickcreate?"), href)
            check("the button carries the link's External ID",
                  "param_ExternalId=" + urllib.parse.quote(pending["external_id"], safe="")
                  in href or "param_ExternalId=" + pending["external_id"] in href, href)
            other_row = wd.find(f"tr[data-link='{other['id']}'] a.button")
            check("a link past pending has no button", not other_row)
            jobs = wd.find("#jobs tbody tr")
            check("the last jobs are listed", len(jobs) >= 1, len(jobs))
            job_text = " ".join(wd.text(j) for j in jobs)
            check("a job shows its kind, account and state",
                  "verify_link" in job_text and "Acme staging" in job_text, job_text)
            shot = os.path.join(out, "status-page.png")
            wd.screenshot(shot)
            check("a screenshot was taken", os.path.getsize(shot) > 10_000)

            print("--> where the key lives")
            cookies = {c["name"]: c for c in wd.cookies()}
            c = cookies.get("xrole_api_key", {})
            check("in an HttpOnly cookie", c.get("httpOnly") is True, c)
            check("with SameSite=Strict", c.get("sameSite") == "Strict", c)
            check("for this browser session only", "expiry" not in c, c)
            with urllib.request.urlopen(base + "/") as r:
                headers = r.headers
            check("pages are not cached", headers.get("cache-control") == "no-store")
            csp = headers.get("content-security-policy", "")
            check("the CSP allows no script and no framing",
                  "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, csp)

            print("--> another origin")
            for page, what in (("/logout.html", "sign the browser out"),
                               ("/login.html", "sign the browser into another organization")):
                wd.get(evil + page)
                wait_for("the answer", lambda: base in wd.current_url())
                refused = "Refused" in wd.source()
                wd.get(base + "/")
                still_a = wd.find("header") and "acme" in wd.text(wd.find("header")[0])
                check(f"a cross-site form cannot {what}", refused and bool(still_a),
                      wd.source()[:300])
            wd.get(evil + "/frame.html")
            time.sleep(1)
            wd.frame(0)
            framed = wd.source()
            wd.parent()
            check("another origin cannot frame the page", "acme" not in framed
                  and "Sign out" not in framed, framed[:300])

            print("--> the second organization")
            wd.get(base + "/")
            wd.click(wd.find("header form button")[0])
            wait_for("the sign-in form", lambda: wd.find("#api_key"))
            check("signing out shows the sign-in form", bool(wd.find("#api_key")))
            check("and forgets the key", "xrole_api_key" not in
                  {c["name"] for c in wd.cookies()})
            sign_in(wd, base, key_b)
            texts = " ".join(wd.text(r) for r in wd.find("#links tbody tr"))
            check("it sees its own link", "Beta only" in texts, texts)
            check("and none of the first organization's",
                  "Acme" not in texts and "verify_link" not in wd.text(wd.find("#jobs")[0]),
                  texts)
        finally:
            if wd:
                wd.quit()
            driver.terminate()
            driver.wait(10)
            attacker.shutdown()
        logs = stack.logs()
        check("no API key appears in the server log", key_a not in logs and key_b not in logs)
    print(f"status-page-check: screenshot kept at {shot}")
    print(f"status-page-check: {RESULTS['passed']} passed, {RESULTS['failed']} failed")
    if RESULTS["failed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
