"""Settings check their values when made: a ValueError that names the setting and says what
it accepts, instead of a failure later and far away."""

import pytest

from hio_http.serving import Server
from hio_http.settings import Settings


def text_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.mark.parametrize("settings, message", [
    ({"idle_timeout": "x"}, "idle_timeout must be a number of seconds above 0"),
    ({"idle_timeout": 0}, "idle_timeout must be a number of seconds above 0"),
    ({"port": 70000}, "port must be a whole number from 0 to 65535"),
    ({"reuse_port": 1}, "reuse_port must be true or false"),
    ({"max_body": 1.5}, "max_body must be a whole number from 0 up"),
    ({"server_header": None}, "server_header must be text"),
    ({"ssl_context": "cert.pem"}, "ssl_context must be an ssl.SSLContext or None"),
])
def test_a_bad_value_is_named_when_made(settings, message):
    with pytest.raises(ValueError, match=message):
        Server(text_app, **settings)


def test_the_defaults_and_the_edges_of_each_range_are_accepted():
    defaults = Settings()  # raises if a default broke its own rule
    assert defaults.port == 0 and defaults.threads == 0
    edges = Settings(port=65535, compress_level=9, threads=0, stall_warning=0,
                     idle_timeout=0.001, max_body=0, ssl_context=None, unix="/tmp/x.sock")
    assert (edges.port, edges.compress_level, edges.idle_timeout) == (65535, 9, 0.001)
