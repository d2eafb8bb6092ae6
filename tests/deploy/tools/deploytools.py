"""Where the tests of tests/deploy find the tools that setup-tools installed.

    import deploytools
    tools = deploytools.Tools(tools_dir)   # raises deploytools.Unavailable with the reason
    tools.helm, tools.kubectl, tools.node, tools.node_modules

tools_dir defaults to $BERRY_DEPLOY_TOOLS, else <repo>/build/test/deploy-tools. kubectl falls back
to the one on PATH when the pinned one is missing. Scripts turn Unavailable into exit code 77.
"""
import os
import shutil

SKIP = 77
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


class Unavailable(Exception):
    pass


def default_dir():
    return os.environ.get("BERRY_DEPLOY_TOOLS") or os.path.join(REPO, "build", "test",
                                                                 "deploy-tools")


class Tools:
    def __init__(self, tools_dir=None):
        self.dir = os.path.abspath(tools_dir or default_dir())
        status_file = os.path.join(self.dir, "status")
        self.status = open(status_file).read().strip() if os.path.exists(status_file) else None

    def _why(self, what):
        if self.status and self.status != "ok":
            return f"{what}: the tools setup reported '{self.status}'"
        if self.status is None:
            return (f"{what}: {self.dir} was never set up (run the deploy_tools test, or "
                    f"tests/deploy/tools/setup-tools {self.dir})")
        return f"{what}: missing from {self.dir} although setup reported ok"

    @property
    def helm(self):
        path = os.path.join(self.dir, "bin", "helm")
        if os.access(path, os.X_OK):
            return path
        raise Unavailable(self._why("helm not available"))

    @property
    def kubectl(self):
        path = os.path.join(self.dir, "bin", "kubectl")
        if os.access(path, os.X_OK):
            return path
        found = shutil.which("kubectl")
        if found:
            return found
        raise Unavailable(self._why("kubectl not available (none on PATH either)"))

    @property
    def node_modules(self):
        path = os.path.join(self.dir, "node_modules")
        if os.path.exists(os.path.join(path, ".package-lock.json")):
            return path
        raise Unavailable(self._why("npm packages (kubernetes-models, typescript) not installed"))

    @property
    def node(self):
        found = shutil.which("node")
        if found:
            return found
        raise Unavailable("node not found on PATH")
