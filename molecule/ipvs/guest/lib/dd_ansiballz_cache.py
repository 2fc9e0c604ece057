# Test guest only (installed by build-image.sh with dd_ansiballz_cache.pth):
# a bytecode cache for the Python files inside Ansible's module payloads.
#
# Every Ansible task runs its module from a fresh zip (AnsiballZ), and
# zipimport never caches bytecode, so Python compiles ansible.module_utils
# (basic.py and ~40 more files) again on every task. Under TCG that is
# 1.5-2 s of a 3-3.5 s module run. This path hook gives those zips an
# importer that keeps compiled code in CACHE, keyed by the SHA-256 of the
# source (and the interpreter's magic number), so the code that runs is
# exactly what the controller sent. Any problem falls back to zipimport.
# Only modules loaded at start-up anyway are imported here (a .pth import runs
# in every Python process); hashlib waits for the first payload.
import marshal
import os
import sys
import zipimport

import _imp

CACHE = "/var/cache/dd-ansiballz-pyc"


def _is_payload(path):
    name = path.split("_payload.zip")[0]
    return "_payload.zip" in path and os.path.basename(name).startswith("ansible_")


class CachingZipImporter(zipimport.zipimporter):
    def _source(self, fullname):
        """(path in the zip, is package) of the module's source, or None."""
        info = zipimport._get_module_info(self, fullname)
        if info is None:
            return None
        path = zipimport._get_module_path(self, fullname)
        path = path + "/__init__.py" if info else path + ".py"
        return path if path in self._files else None

    def get_filename(self, fullname):
        # zipimport's own compiles the module just to name its file
        path = self._source(fullname)
        if path is None:
            return super().get_filename(fullname)
        return self._files[path][0]

    def get_code(self, fullname):
        try:
            path = self._source(fullname)
        except Exception:  # pylint: disable=broad-except
            path = None
        if path is None:
            return super().get_code(fullname)
        import hashlib  # pylint: disable=import-outside-toplevel
        magic = sys.modules["_frozen_importlib_external"].MAGIC_NUMBER
        filename = self._files[path][0]
        data = zipimport._get_data(self.archive, self._files[path])
        cached = os.path.join(CACHE, hashlib.sha256(magic + data).hexdigest())
        try:
            with open(cached, "rb") as fh:
                code = marshal.loads(fh.read())
            _imp._fix_co_filename(code, filename)
            return code
        except (OSError, EOFError, ValueError, TypeError):
            pass
        code = compile(data, filename, "exec", dont_inherit=True)
        try:
            tmp = "%s.%d" % (cached, os.getpid())
            with open(tmp, "wb") as fh:
                fh.write(marshal.dumps(code))
            os.replace(tmp, cached)
        except OSError:
            pass
        return code


def _hook(path):
    if _is_payload(path) and os.path.isdir(CACHE) and os.access(CACHE, os.W_OK):
        return CachingZipImporter(path)
    raise ImportError("not an Ansible payload")


sys.path_hooks.insert(0, _hook)
