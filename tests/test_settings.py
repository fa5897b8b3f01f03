"""Settings check their values when made: a ValueError that names the setting and says what
it accepts, instead of a failure later and far away."""

import pytest

from hio_http.serving import Server
from hio_http.settings import Settings, fields


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


def test_every_default_passes_its_own_check():
    settings = Settings()
    assert {field.name for field in fields()} <= set(vars(settings))
