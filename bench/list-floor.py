#!/usr/bin/env python3
"""The list floor of a cold start: every list onus makes at start, paged as onus pages them
(src/controller/watch.rs: POD_PAGE, PAGE, CRD_PAGE), four at a time (LISTS_IN_FLIGHT), read to
the last byte and decoded not at all (only each page's continue token is read). Prints the wall
time, kube-apiserver's CPU (utime+stime from /proc) and the bytes, as JSON (what onus asks for)
or as protobuf. No operator can list faster than this client with the same encoding.

Against a fixture held by `onus-bench --size M --hold`, which prints the admin kubeconfig and
the API server's pid:

    python3 bench/list-floor.py KUBECONFIG json|proto APISERVER_PID

Alternate the two encodings run by run: the API server's cost of serving lists grows with its
age (BENCHMARKS.md, session 10).
"""
import http.client, os, queue, re, ssl, sys, threading, time

kubeconfig, mode, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = open(kubeconfig).read()
server = re.search(r"server:\s*(\S+)", text).group(1)
ca = re.search(r"certificate-authority:\s*(\S+)", text).group(1)
cert = re.search(r"client-certificate:\s*(\S+)", text).group(1)
key = re.search(r"client-key:\s*(\S+)", text).group(1)
host, port = re.match(r"https://([^:/]+):(\d+)", server).groups()

ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)

# In onus's order (src/controller/watch.rs): the kinds that run pods first, their page sizes.
KINDS = [
    ("/api/v1/pods", 100),
    ("/apis/apps/v1/replicasets", 100),
    ("/apis/apps/v1/deployments", 100),
    ("/api/v1/namespaces", 500),
    ("/apis/networking.k8s.io/v1/networkpolicies", 500),
    ("/api/v1/serviceaccounts", 500),
    ("/api/v1/services", 500),
    ("/apis/rbac.authorization.k8s.io/v1/roles", 500),
    ("/apis/rbac.authorization.k8s.io/v1/clusterroles", 500),
    ("/apis/rbac.authorization.k8s.io/v1/rolebindings", 500),
    ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", 500),
    ("/apis/apps/v1/statefulsets", 100),
    ("/apis/apps/v1/daemonsets", 100),
    ("/apis/batch/v1/jobs", 100),
    ("/apis/batch/v1/cronjobs", 100),
    ("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", 500),
    ("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", 500),
    ("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", 25),
    ("/apis/apiregistration.k8s.io/v1/apiservices", 500),
]
ACCEPT = {
    "json": "application/json",
    "proto": "application/vnd.kubernetes.protobuf, application/json",
}[mode]


def varint(b, i):
    shift = value = 0
    while True:
        c = b[i]
        i += 1
        value |= (c & 0x7F) << shift
        if c < 0x80:
            return value, i
        shift += 7


def fields(b, i, end):
    """(field number, wire type, value or (start, end)) of one protobuf message."""
    while i < end:
        tag, i = varint(b, i)
        num, wt = tag >> 3, tag & 7
        if wt == 0:
            v, i = varint(b, i)
            yield num, wt, v
        elif wt == 2:
            n, i = varint(b, i)
            yield num, wt, (i, i + n)
            i += n
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wt}")


def continue_token(body, content_type):
    if content_type.startswith("application/vnd.kubernetes.protobuf"):
        assert body[:4] == b"k8s\x00", body[:8]
        for num, _, v in fields(body, 4, len(body)):
            if num == 2:  # Unknown.raw: the list
                for lnum, _, lv in fields(body, v[0], v[1]):
                    if lnum == 1:  # ListMeta
                        for mnum, _, mv in fields(body, lv[0], lv[1]):
                            if mnum == 3:
                                return body[mv[0]:mv[1]].decode()
                        return ""
        return ""
    m = re.search(rb'"continue":"([^"]*)"', body[:2048])
    return m.group(1).decode() if m else ""


def cpu(p):
    f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


stats = {"bytes": 0, "pages": 0, "proto": 0}
lock = threading.Lock()
work = queue.Queue()
for k in KINDS:
    work.put(k)


def worker():
    conn = http.client.HTTPSConnection(host, int(port), context=ctx)
    while True:
        try:
            path, limit = work.get_nowait()
        except queue.Empty:
            return
        token = ""
        while True:
            url = f"{path}?limit={limit}" + (f"&continue={token}" if token else "")
            conn.request("GET", url, headers={"Accept": ACCEPT, "User-Agent": "kube-rs/5"})
            r = conn.getresponse()
            body = r.read()
            if r.status == 404:
                break
            assert r.status == 200, (url, r.status, body[:200])
            ct = r.getheader("Content-Type", "")
            with lock:
                stats["bytes"] += len(body)
                stats["pages"] += 1
                stats["proto"] += ct.startswith("application/vnd.kubernetes.protobuf")
            token = continue_token(body, ct)
            if not token:
                break


api0 = cpu(pid)
t0 = time.monotonic()
threads = [threading.Thread(target=worker) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
wall = time.monotonic() - t0
api = cpu(pid) - api0
me = sum(os.times()[:2])
print(
    f"{mode:5} wall {wall:6.2f} s  kube-apiserver CPU {api:5.2f} s  client CPU {me:5.2f} s  "
    f"{stats['bytes'] / 1e6:7.1f} MB in {stats['pages']} pages ({stats['proto']} protobuf)"
)
