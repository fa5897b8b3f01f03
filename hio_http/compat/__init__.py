"""Adapters that let code written for another package's API run on hio_http unchanged.

`hio_http.compat.http` is shaped like ioflo/hio's `hio.core.http`. Nothing below this package
imports it: it only translates names and keywords onto the native API.
"""
