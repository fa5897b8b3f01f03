"""StaticSink served for real: files, types, validators, ranges, and hostile paths over raw
sockets. A secret file outside the root (and one in a sibling directory whose name starts like
the root's) must never come back."""

import calendar
import email.utils
import gzip
import hashlib
import os

import falcon
import pytest
import requests

from conftest import raw_connect, read_until_closed
from hio_http.static import StaticSink

MTIME = calendar.timegm((2021, 1, 2, 3, 4, 5))
LAST_MODIFIED = "Sat, 02 Jan 2021 03:04:05 GMT"
DATA = bytes(range(256)) * 3 + bytes(range(232))  # 1000 bytes, each position recognisable
HELLO = b"Hello, static!\n"
SECRET = b"TOP SECRET"


@pytest.fixture
def site(tmp_path):
    """A root `www` with files, dotfiles and symlinks, beside secrets that must stay unseen."""
    (tmp_path / "secret.txt").write_bytes(SECRET + b" outside\n")
    (tmp_path / "www2").mkdir()
    (tmp_path / "www2" / "secret.txt").write_bytes(SECRET + b" sibling\n")
    root = tmp_path / "www"
    files = {
        "hello.txt": HELLO, "index.html": b"<h1>home</h1>\n", "data.bin": DATA,
        "app.js": b"let x = 1;\n", "data.json": b'{"a": 1}\n', "image.png": b"\x89PNG\r\n",
        "blob.zzqx": b"\x00\x01", "notes.txt.gz": gzip.compress(b"notes\n", mtime=0),
        "caf\u00e9.txt": "caf\u00e9\n".encode(), "empty.txt": b"", ".secret": SECRET + b" dot\n",
        ".git/config": SECRET + b" git\n", "sub/index.html": b"<h1>sub</h1>\n",
        "sub/page.txt": b"page\n", "bare/file.txt": b"no index here\n",
    }
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    os.mkfifo(root / "fifo")
    links = {"alias.txt": "hello.txt", "leak": "../secret.txt", "sibling": "../www2/secret.txt",
             "outdir": "..", "hidden-link": ".secret", "sub/up": "../hello.txt"}
    for name, target in links.items():
        (root / name).symlink_to(target)
    for folder, _, names in os.walk(root):
        for name in names:
            if name != "fifo":
                os.utime(os.path.join(folder, name), (MTIME, MTIME))
    return root


def static_app(root, **options):
    app = falcon.App()
    app.add_sink(StaticSink(root, prefix="/static", **options), "/static")
    return app


def raw_request(server, target, method="GET", headers=()):
    """(status, head bytes, body) of one request sent byte for byte, then the connection closed."""
    sock = raw_connect(server)
    with sock:
        lines = [f"{method} {target} HTTP/1.1", "Host: test", "Connection: close", *headers]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = read_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


def etag_of(server, path="/static/hello.txt"):
    return requests.head(server.url + path).headers["ETag"]


# -- plain files ---------------------------------------------------------------------------

def test_get_serves_exact_bytes_and_headers(serve, site):
    server = serve(static_app(site))
    response = requests.get(server.url + "/static/hello.txt")
    assert response.status_code == 200
    assert response.content == HELLO
    headers = response.headers
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Content-Length"] == str(len(HELLO))
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Cache-Control"] == "public, max-age=3600"
    assert headers["Last-Modified"] == LAST_MODIFIED
    info = os.stat(site / "hello.txt")
    assert headers["ETag"] == f'"{info.st_size:x}-{info.st_mtime_ns:x}-{info.st_ino:x}"'
    assert "Content-Encoding" not in headers


@pytest.mark.parametrize("name, content_type", [
    ("app.js", {"application/javascript; charset=utf-8", "text/javascript; charset=utf-8"}),
    ("data.json", {"application/json; charset=utf-8"}),
    ("index.html", {"text/html; charset=utf-8"}),
    ("image.png", {"image/png"}),
    ("blob.zzqx", {"application/octet-stream"}),
    ("notes.txt.gz", {"application/gzip"}),
])
def test_content_type(serve, site, name, content_type):
    server = serve(static_app(site))
    response = requests.get(server.url + "/static/" + name, headers={"Accept-Encoding": ""})
    assert response.status_code == 200
    assert response.headers["Content-Type"] in content_type
    assert "Content-Encoding" not in response.headers  # .gz goes out as the stored bytes
    assert response.content == (site / name).read_bytes()


def test_non_ascii_name_and_empty_file(serve, site):
    server = serve(static_app(site))
    response = requests.get(server.url + "/static/caf%C3%A9.txt")
    assert (response.status_code, response.content) == (200, "caf\u00e9\n".encode())
    response = requests.get(server.url + "/static/empty.txt")
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["Content-Length"] == "0"


@pytest.mark.parametrize("cache_control, expected", [(None, None), ("no-cache", "no-cache")])
def test_cache_control_setting(serve, site, cache_control, expected):
    server = serve(static_app(site, cache_control=cache_control))
    response = requests.get(server.url + "/static/hello.txt")
    assert response.headers.get("Cache-Control") == expected


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_get_405_with_allow(serve, site, method):
    server = serve(static_app(site))
    response = requests.request(method, server.url + "/static/hello.txt")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert HELLO not in response.content


def test_head_has_get_headers_and_no_body(serve, site):
    server = serve(static_app(site))
    got = requests.get(server.url + "/static/data.bin")
    status, head, body = raw_request(server, "/static/data.bin", method="HEAD")
    assert (status, body) == (200, b"")
    head_lines = set(head.decode("latin-1").split("\r\n")[1:])
    for name in ("Content-Length", "Content-Type", "ETag", "Last-Modified", "Accept-Ranges",
                 "Cache-Control"):
        assert f"{name}: {got.headers[name]}".lower() in {line.lower() for line in head_lines}
    assert got.headers["Content-Length"] == "1000"


def test_head_ignores_range(serve, site):
    """Range is defined for GET only (RFC 9110 §14.2): HEAD describes the whole file."""
    server = serve(static_app(site))
    response = requests.head(server.url + "/static/data.bin", headers={"Range": "bytes=0-9"})
    assert response.status_code == 200
    assert response.headers["Content-Length"] == "1000"
    assert "Content-Range" not in response.headers


def test_symlink_inside_the_root_is_served(serve, site):
    server = serve(static_app(site))
    assert requests.get(server.url + "/static/alias.txt").content == HELLO
    assert requests.get(server.url + "/static/sub/up").content == HELLO


def test_prefix_root(serve, site):
    app = falcon.App()
    app.add_sink(StaticSink(site), "/")
    server = serve(app)
    assert requests.get(server.url + "/hello.txt").content == HELLO
    assert requests.get(server.url + "/").content == b"<h1>home</h1>\n"
    assert requests.get(server.url + "//hello.txt").status_code == 404


def test_constructor_checks(site):
    with pytest.raises(NotADirectoryError):
        StaticSink(site / "hello.txt")
    with pytest.raises(ValueError):
        StaticSink(site, prefix="static")
    with pytest.raises(ValueError):
        StaticSink(site, index="../secret.txt")


# -- hostile paths -------------------------------------------------------------------------

HOSTILE = [
    "/static/../secret.txt",
    "/static/sub/../../secret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/.%2e/secret.txt",
    "/static/%2e%2e%2fsecret.txt",
    "/static/..%2fsecret.txt",
    "/static/..%2Fsecret.txt",
    "/static/..%5csecret.txt",
    "/static/..%5Csecret.txt",
    "/static/%252e%252e/secret.txt",  # decoded once only: a literal "%2e%2e" directory
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/%2Fetc/passwd",
    "/static/hello.txt%00.png",
    "/static/hello.txt%00",
    "/static/sub%2fpage.txt",  # an encoded slash is refused even when it leads somewhere real
    "/static/./hello.txt",
    "/static/sub/../hello.txt",
    "/static/.secret",
    "/static/.git/config",
    "/static/%2egit/config",
    "/static/hidden-link",
    "/static/leak",
    "/static/sibling",  # www2/secret.txt: "www2" starts with "www" but is not inside it
    "/static/outdir/secret.txt",
    "/static/outdir/www2/secret.txt",
    "/static/outdir",
    "/static/fifo",
    "/static/hello.txt/",
    "/static/missing.txt",
    "/static/bare/",
    "/static/bare",
    "/staticsecret.txt",
    "/static/caf%E9.txt",  # latin-1, not UTF-8
]


@pytest.mark.parametrize("target", HOSTILE)
def test_hostile_path_is_404(serve, site, target):
    server = serve(static_app(site))
    status, head, body = raw_request(server, target)
    assert status == 404
    assert SECRET not in head + body
    assert HELLO not in body


@pytest.mark.parametrize("target", ["/static/..\\secret.txt", "/static/hello.txt\0.png",
                                    "/static/..\\..\\secret.txt"])
def test_raw_backslash_and_nul_are_refused(serve, site, target):
    """The parser may refuse these bytes itself (400); if it lets them through, the sink must."""
    server = serve(static_app(site))
    status, head, body = raw_request(server, target)
    assert status in (400, 404)
    assert SECRET not in head + body and HELLO not in body


def without_raw_target(app):
    """Middleware hiding RAW_URI and REQUEST_URI, as servers that do not set them would."""
    def middleware(environ, start_response):
        environ.pop("RAW_URI", None)
        environ.pop("REQUEST_URI", None)
        return app(environ, start_response)
    return middleware


@pytest.mark.parametrize("target", [
    "/static/%2e%2e/secret.txt", "/static/..%2fsecret.txt", "/static/..%5csecret.txt",
    "/static/%2fetc%2fpasswd", "/static/hello.txt%00.png", "/static/%2e%2e%2fwww2/secret.txt",
])
def test_decoded_path_is_checked_without_a_raw_target(serve, site, target):
    """Without the raw target the decoded PATH_INFO still meets every segment check."""
    server = serve(without_raw_target(static_app(site)))
    status, head, body = raw_request(server, target)
    assert status == 404
    assert SECRET not in head + body and HELLO not in body


def test_hostile_paths_never_reach_the_secret_with_head(serve, site):
    server = serve(static_app(site))
    for target in ("/static/leak", "/static/%2e%2e/secret.txt", "/static/sibling"):
        status, head, _ = raw_request(server, target, method="HEAD")
        assert status == 404
        assert b"Content-Length: 19" not in head  # the secrets' own length


# -- directories ---------------------------------------------------------------------------

def test_directory_with_slash_serves_its_index(serve, site):
    server = serve(static_app(site))
    response = requests.get(server.url + "/static/")
    assert (response.status_code, response.content) == (200, b"<h1>home</h1>\n")
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    response = requests.get(server.url + "/static/sub/")
    assert (response.status_code, response.content) == (200, b"<h1>sub</h1>\n")


@pytest.mark.parametrize("target, location", [
    ("/static/sub", "/static/sub/"),
    ("/static/sub?x=1&y=a%20b", "/static/sub/?x=1&y=a%20b"),
    ("/static", "/static/"),
])
def test_directory_without_slash_redirects(serve, site, target, location):
    server = serve(static_app(site))
    response = requests.get(server.url + target, allow_redirects=False)
    assert response.status_code == 301
    assert response.headers["Location"] == location
    assert response.content == b""


def test_no_index_means_no_directories(serve, site):
    server = serve(static_app(site, index=None))
    assert requests.get(server.url + "/static/").status_code == 404
    assert requests.get(server.url + "/static/sub/", allow_redirects=False).status_code == 404
    assert requests.get(server.url + "/static/sub/page.txt").content == b"page\n"


# -- conditional requests ------------------------------------------------------------------

def test_if_none_match(serve, site):
    server = serve(static_app(site))
    url = server.url + "/static/hello.txt"
    etag = etag_of(server)
    for value in (etag, "W/" + etag, f'"nope", {etag}', "*", f'W/"x",W/{etag}'):
        response = requests.get(url, headers={"If-None-Match": value})
        assert response.status_code == 304, value
        assert response.content == b""
        assert response.headers["ETag"] == etag
        assert response.headers["Last-Modified"] == LAST_MODIFIED
        assert "Content-Type" not in response.headers
    response = requests.get(url, headers={"If-None-Match": '"other", W/"else"'})
    assert (response.status_code, response.content) == (200, HELLO)


def test_if_modified_since(serve, site):
    server = serve(static_app(site))
    url = server.url + "/static/hello.txt"
    for value in (LAST_MODIFIED, "Sun, 02 Jan 2022 00:00:00 GMT",
                  "Saturday, 02-Jan-21 03:04:05 GMT"):
        response = requests.get(url, headers={"If-Modified-Since": value})
        assert (response.status_code, response.content) == (304, b""), value
    for value in ("Sat, 02 Jan 2021 03:04:04 GMT", "yesterday", "", "Sat, 02 Jan 2021"):
        response = requests.get(url, headers={"If-Modified-Since": value})
        assert (response.status_code, response.content) == (200, HELLO), value


def test_if_none_match_overrides_if_modified_since(serve, site):
    """RFC 9110 §13.2.2: with If-None-Match present, If-Modified-Since is not evaluated."""
    server = serve(static_app(site))
    response = requests.get(server.url + "/static/hello.txt", headers={
        "If-None-Match": '"stale"', "If-Modified-Since": LAST_MODIFIED})
    assert (response.status_code, response.content) == (200, HELLO)


def test_head_304(serve, site):
    server = serve(static_app(site))
    response = requests.head(server.url + "/static/hello.txt",
                             headers={"If-None-Match": etag_of(server)})
    assert response.status_code == 304


# -- ranges --------------------------------------------------------------------------------

@pytest.mark.parametrize("header, first, last", [
    ("bytes=0-9", 0, 9),
    ("bytes=10-", 10, 999),
    ("bytes=-5", 995, 999),
    ("bytes=990-5000", 990, 999),
    ("bytes=0-0", 0, 0),
    ("bytes=999-999", 999, 999),
    ("bytes=-2000", 0, 999),
    ("BYTES=3-4", 3, 4),
    ("bytes= 3-4 ", 3, 4),
    ("bytes=3-4,", 3, 4),
])
def test_single_range(serve, site, header, first, last):
    server = serve(static_app(site))
    response = requests.get(server.url + "/static/data.bin", headers={"Range": header})
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/1000"
    assert response.headers["Content-Length"] == str(last - first + 1)
    assert response.content == DATA[first:last + 1]


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0",
                                    "bytes=1000-1000"])
def test_unsatisfiable_range_is_416(serve, site, header):
    server = serve(static_app(site))
    response = requests.get(server.url + "/static/data.bin", headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == "bytes */1000"
    assert DATA[:16] not in response.content


def test_any_range_of_an_empty_file_is_416(serve, site):
    server = serve(static_app(site))
    response = requests.get(server.url + "/static/empty.txt", headers={"Range": "bytes=0-"})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == "bytes */0"


@pytest.mark.parametrize("header", [
    "bytes=0-1,5-6",  # several ranges: the whole file (documented simplification)
    "bytes=0-1, -5",
    "bytes=abc", "bytes=9-3", "items=0-5", "bytes=", "bytes=-", "bytes=--5", "0-5",
    "bytes=1-2-3", "bytes=\u00b9-2", "bytes=0x1-5", "bytes=+1-5", "bytes=1 - 5",
])
def test_ignored_range_serves_the_whole_file(serve, site, header):
    server = serve(static_app(site))
    response = requests.get(server.url + "/static/data.bin",
                            headers={"Range": header.encode("utf-8")})
    assert response.status_code == 200
    assert "Content-Range" not in response.headers
    assert response.content == DATA


def test_every_range_of_a_small_file(serve, site):
    """All `first-last` and `-n` ranges of a 7-byte file against a model of RFC 9110 §14.1."""
    (site / "seven.bin").write_bytes(b"0123456")
    data, size = b"0123456", 7
    server = serve(static_app(site))
    url = server.url + "/static/seven.bin"
    with requests.Session() as session:
        for first in range(10):
            for last in [None, *range(10)]:
                header = f"bytes={first}-{'' if last is None else last}"
                response = session.get(url, headers={"Range": header})
                if last is not None and last < first:
                    expected = (200, data, None)
                elif first >= size:
                    expected = (416, None, f"bytes */{size}")
                else:
                    end = size - 1 if last is None else min(last, size - 1)
                    expected = (206, data[first:end + 1], f"bytes {first}-{end}/{size}")
                status, body, content_range = expected
                assert response.status_code == status, header
                assert response.headers.get("Content-Range") == content_range, header
                if body is not None:
                    assert response.content == body, header
        for suffix in range(10):
            response = session.get(url, headers={"Range": f"bytes=-{suffix}"})
            if suffix == 0:
                assert response.status_code == 416
            else:
                assert (response.status_code, response.content) == (206, data[-suffix:])


def test_if_range(serve, site):
    server = serve(static_app(site))
    url = server.url + "/static/data.bin"
    etag = etag_of(server, "/static/data.bin")
    cases = [
        (etag, 206),
        ('"stale"', 200),
        ("W/" + etag, 200),  # If-Range needs a strong comparison (RFC 9110 §13.1.5)
        (LAST_MODIFIED, 206),
        ("Sat, 02 Jan 2021 03:04:06 GMT", 200),
        ("Fri, 01 Jan 2021 00:00:00 GMT", 200),
        ("not a date", 200),
    ]
    for value, status in cases:
        response = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": value})
        assert response.status_code == status, value
        assert response.content == (DATA[:10] if status == 206 else DATA), value


def test_if_range_date_of_a_file_written_just_now_is_weak(serve, site):
    """A date validator within the file's last second cannot tell two writes apart."""
    (site / "fresh.txt").write_bytes(b"fresh data\n")
    server = serve(static_app(site))
    url = server.url + "/static/fresh.txt"
    modified = requests.head(url).headers["Last-Modified"]
    response = requests.get(url, headers={"Range": "bytes=0-4", "If-Range": modified})
    assert response.status_code in (200, 206)  # 206 only if a second passed meanwhile
    if response.status_code == 200:
        assert response.content == b"fresh data\n"


# -- the file: wrapper, reads, closing -----------------------------------------------------

def recording(app, log):
    """Middleware that counts what is read from each file handed to wsgi.file_wrapper."""
    def middleware(environ, start_response):
        wrap = environ["wsgi.file_wrapper"]

        def wrapper(filelike, block_size=8192):
            entry = {"block_size": block_size, "read": 0, "closed": False}
            log.append(entry)

            class Counting:
                def read(self, size=-1):
                    data = filelike.read(size)
                    entry["read"] += len(data)
                    return data

                def close(self):
                    entry["closed"] = True
                    filelike.close()

            return wrap(Counting(), block_size)

        environ["wsgi.file_wrapper"] = wrapper
        return app(environ, start_response)
    return middleware


@pytest.fixture
def big(site):
    """A 20 MiB file of random bytes in the root, and its sha256."""
    content = os.urandom(20 * 1024 * 1024)
    (site / "big.bin").write_bytes(content)
    return hashlib.sha256(content).hexdigest()


def test_range_of_a_big_file_reads_only_the_range(serve, site, big):
    log = []
    server = serve(recording(static_app(site, block_size=4096), log))
    with requests.Session() as session:
        response = session.get(server.url + "/static/big.bin", headers={"Range": "bytes=0-9"})
        assert response.status_code == 206
        assert response.content == (site / "big.bin").read_bytes()[:10]
        session.get(server.url + "/static/hello.txt")  # the server is past the first close()
    assert len(log) == 2
    assert log[0] == {"block_size": 4096, "read": 10, "closed": True}


def test_head_304_and_416_open_no_file(serve, site):
    log = []
    server = serve(recording(static_app(site), log))
    url = server.url + "/static/data.bin"
    etag = etag_of(server, "/static/data.bin")
    assert requests.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert requests.get(url, headers={"Range": "bytes=2000-"}).status_code == 416
    assert requests.get(url + "/").status_code == 404
    assert log == []
    requests.get(url)
    requests.head(url)
    assert [entry["read"] for entry in log] == [1000]


@pytest.mark.parametrize("validate", [True, False])  # unvalidated: the server's sendfile path
def test_big_file_downloads_intact(serve, site, big, validate):
    server = serve(static_app(site), validate=validate)
    response = requests.get(server.url + "/static/big.bin")
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(20 * 1024 * 1024)
    assert hashlib.sha256(response.content).hexdigest() == big


def test_last_modified_is_an_http_date(serve, site):
    server = serve(static_app(site))
    value = requests.head(server.url + "/static/data.bin").headers["Last-Modified"]
    assert email.utils.parsedate_to_datetime(value).timestamp() == MTIME
