"""What importing the package costs: neither Falcon nor wsproto until they are used."""

import subprocess
import sys


def imported_after(code: str) -> set:
    result = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, timeout=60, check=True)
    return set(result.stdout.split())


def test_import_hio_http_loads_neither_falcon_nor_wsproto():
    modules = imported_after("import hio_http\nfrom hio_http import Server, Client, Doist")
    assert "falcon" not in modules and "wsproto" not in modules
    assert "hio_http.serving" in modules  # the server itself is there


def test_lazy_names_load_on_first_use():
    modules = imported_after("from hio_http import StaticSink\nassert StaticSink.__name__")
    assert "falcon" in modules


def test_unknown_names_are_attribute_errors():
    import hio_http
    try:
        hio_http.NoSuchThing
    except AttributeError as ex:
        assert "NoSuchThing" in str(ex)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
