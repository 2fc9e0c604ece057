# Offline stand-in for ansible-test's pip bootstrap script, which it would
# download from a host this machine cannot reach: ensurepip, then install the
# pinned pip (and whatever else ansible-test asks for) from the package index.
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)
