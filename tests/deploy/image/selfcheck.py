#!/usr/bin/env python3
"""Shows that check_image.py fails on broken Dockerfiles: the real Dockerfile passes, and each
mutated copy of it (a runtime package removed, root user, a fat runtime base, a program not
copied, a curl health check, ...) fails with the expected message.

Usage: selfcheck.py --repo DIR --build-dir DIR --binary PROGRAM=PATH ... (as check_image.py)
Exit codes: 0 every mutation was caught, 1 otherwise, 77 a tool is missing (skipped).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_image  # noqa: E402


def runtime_packages(text: str) -> list[str]:
    stages, _ = check_image.parse_dockerfile(text)
    return [p for packages, _, _ in check_image.apt_install_lists(stages[-1]) for p in packages]


def remove_package(text: str, package: str) -> str:
    """The Dockerfile without `package` in the runtime stage's install list."""
    start = text.rindex("\nFROM ")
    runtime = re.sub(r"(?<=\s)" + re.escape(package) + r"(?=\s)", "", text[start:], count=1)
    return text[:start] + runtime


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", required=True)
    parser.add_argument("--build-dir", required=True)
    parser.add_argument("--binary", action="append", default=[])
    args = parser.parse_args()
    for tool in ("readelf", "ldd", "dpkg", "dpkg-query"):
        if not shutil.which(tool):
            print(f"SKIP: {tool} is not available")
            return 77
    try:
        import yaml  # noqa: F401
    except ImportError:
        print("SKIP: python3-yaml is not installed")
        return 77
    binaries = check_image.parse_binaries(args.binary)
    with open(os.path.join(args.repo, "Dockerfile"), encoding="utf-8") as f:
        original = f.read()
    with open(os.path.join(args.repo, "docker-compose.yml"), encoding="utf-8") as f:
        compose = f.read()

    failures: list[str] = []
    work = tempfile.mkdtemp(prefix="berry-image-selfcheck-")
    try:
        def check(text: str, compose_text: str = compose, dockerignore: str | None = None) -> list[str]:
            repo = os.path.join(work, "repo")
            shutil.rmtree(repo, ignore_errors=True)
            os.makedirs(repo)
            if dockerignore is not None:  # a build context: the sources, linked
                for name in ("CMakeLists.txt", "proto", "common", "control-plane", "data-plane",
                             "tests", "scripts"):
                    os.symlink(os.path.join(args.repo, name), os.path.join(repo, name))
                with open(os.path.join(repo, ".dockerignore"), "w", encoding="utf-8") as f:
                    f.write(dockerignore)
            with open(os.path.join(repo, "Dockerfile"), "w", encoding="utf-8") as f:
                f.write(text)
            with open(os.path.join(repo, "docker-compose.yml"), "w", encoding="utf-8") as f:
                f.write(compose_text)
            dockerfile = os.path.join(repo, "Dockerfile")
            with contextlib.redirect_stdout(io.StringIO()):
                return (check_image.check_dockerfile(dockerfile, repo, binaries, args.build_dir)
                        + check_image.check_libraries(dockerfile, binaries))

        baseline = check(original)
        if baseline:
            failures.append("the unmodified Dockerfile does not pass: " + "; ".join(baseline))

        def expect_failure(label: str, text: str, needle: str, compose_text: str = compose,
                           dockerignore: str | None = None):
            if text == original and compose_text == compose and dockerignore is None:
                failures.append(f"{label}: the mutation did not apply (Dockerfile reworded?)")
                return
            errors = check(text, compose_text, dockerignore)
            if not any(needle in e for e in errors):
                failures.append(f"{label}: not caught (wanted an error with {needle!r}, got "
                                f"{errors or 'none'})")
            else:
                print(f"caught: {label}")

        packages = runtime_packages(original)
        libraries = [p for p in packages if p not in check_image.EXTRA_RUNTIME_PACKAGES]
        if len(libraries) < 3:
            failures.append(f"the runtime list looks wrong: {packages}")
        for package in libraries:
            expect_failure(f"runtime package {package} removed", remove_package(original, package),
                           f"from package {package}, which the runtime stage does not install")
        expect_failure("an unneeded package added",
                       original.replace("ca-certificates \\", "ca-certificates \\\n        libyaml-0-2 \\", 1),
                       "installs libyaml-0-2, which no program needs")
        expect_failure("curl added to the runtime",
                       original.replace("ca-certificates \\", "ca-certificates curl \\", 1),
                       "shell tools")
        expect_failure("USER root", original.replace("USER 65532:65532", "USER root"),
                       "is not numeric")
        expect_failure("USER 0", original.replace("USER 65532:65532", "USER 0:0"), "is root")
        expect_failure("no USER", original.replace("USER 65532:65532\n", ""), "sets no USER")
        expect_failure("runtime on debian:bookworm",
                       original.replace("FROM debian:${DEBIAN_RELEASE}-slim", "FROM debian:${DEBIAN_RELEASE}"),
                       "expected debian:bookworm-slim")
        expect_failure("berry-routes not copied",
                       original.replace("    /usr/local/bin/berry-routes \\\n", "", 1),
                       "does not COPY berry-routes")
        expect_failure("recommends installed", original.replace(" --no-install-recommends", ""),
                       "lacks --no-install-recommends")
        expect_failure("apt lists kept",
                       original.replace("rm -rf /var/lib/apt/lists/* /var/cache", "rm -rf /var/cache"),
                       "does not remove /var/lib/apt/lists")
        expect_failure("tests built", original.replace("-DBERRY_BUILD_TESTS=OFF", "-DBERRY_BUILD_TESTS=ON"),
                       "BERRY_BUILD_TESTS=OFF")
        expect_failure("curl health check",
                       original.replace('CMD ["berryctl", "probe", "http://127.0.0.1:8080/readyz"]',
                                        'CMD curl -fsS http://127.0.0.1:8080/readyz'),
                       "HEALTHCHECK")
        expect_failure("compose health check with curl", original,
                       "runs 'curl'",
                       compose.replace('test: ["CMD", "berryctl", "probe", "http://127.0.0.1:8080/readyz"]',
                                       'test: ["CMD", "curl", "-f", "http://127.0.0.1:8080/readyz"]', 1))
        with open(os.path.join(args.repo, ".dockerignore"), encoding="utf-8") as f:
            ignore = f.read()
        context = check(original, compose, ignore)
        if context:
            failures.append("the real .dockerignore does not pass: " + "; ".join(context))
        expect_failure(".dockerignore excluding sources", original,
                       ".dockerignore excludes common/", dockerignore=ignore + "common/\n")
        expect_failure(".dockerignore excluding tests/support", original,
                       ".dockerignore excludes tests/support/", dockerignore=ignore + "tests/\n")
        expect_failure(".dockerignore letting build/ in", original,
                       ".dockerignore does not exclude build/",
                       dockerignore=ignore.replace("**/build/\n", "").replace("\nbuild/\n", "\n"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for failure in failures:
        print(f"FAIL: {failure}")
    if failures:
        return 1
    print("ok: every mutation of the Dockerfile was caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
