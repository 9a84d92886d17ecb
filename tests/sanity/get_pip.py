"""Offline stand-in for get-pip.py, used by `ansible-test sanity --venv` (see Makefile `sanity`).

ansible-test bootstraps pip in its sanity venvs with a get-pip.py it downloads from a host our
machines cannot reach. This does the same job with what we have: the interpreter's bundled pip
(ensurepip), then `pip install` of the packages ansible-test asked for (from PyPI).
Arguments follow get-pip.py: pip install options and requirements, plus --no-setuptools/--no-wheel.
"""

import ensurepip
import os
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
# ansible-test runs this with a filtered environment: keep the machine's CA bundle (a TLS proxy
# may sit in front of the package index) when one is there.
bundle = "/etc/ssl/certs/ca-certificates.crt"
if os.path.exists(bundle):
    args = ["--cert", bundle, *args]
ensurepip.bootstrap(upgrade=True)
subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
