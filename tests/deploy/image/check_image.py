#!/usr/bin/env python3
"""Offline checks of the Dockerfile (no Docker engine needed).

Two modes (tests/deploy/image/CMakeLists.txt registers each as a ctest):

  dockerfile   static checks: a multi-stage build whose build stage runs scripts/install-deps and
               a Release cmake build without tests/benchmarks, installing every program to
               /usr/local/bin; a runtime stage on debian:bookworm-slim that installs packages with
               --no-install-recommends and cleans the apt lists, COPYs every program, runs as a
               non-root numeric USER, EXPOSEs the ports, has an exec-form HEALTHCHECK with
               `berryctl probe`, no ENTRYPOINT script; every Berry program docker-compose.yml and
               the Kubernetes manifests call is one the image holds.
  libs         the runtime stage is complete: for every shared library each built program needs
               (readelf -d NEEDED, resolved with ldd), the Debian package shipping it (dpkg -S)
               is in the runtime stage's `apt-get install` list, or is one of the packages
               debian:bookworm-slim already ships (BASE_PACKAGES); every library ldd loads
               indirectly comes from a package those pull in (Depends, recursively); and every
               listed package serves some program (only runtime libraries are installed).

Exit codes: 0 passed, 1 failed (each problem printed), 77 a tool is missing (skipped).
"""
from __future__ import annotations

import argparse
import functools
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

SKIP = 77

# Packages debian:bookworm-slim ships (they are Essential or required by apt/dpkg), so the
# runtime stage need not list them. Anything else a program needs must be listed.
BASE_PACKAGES = {"libc6", "libstdc++6", "libgcc-s1"}
# Listed packages that serve no library but are wanted at run time.
EXTRA_RUNTIME_PACKAGES = {"ca-certificates": "the trust store for HTTPS providers"}
PROGRAMS = ["berry-proxy", "berry-control-plane", "berryctl", "berry-routes", "berry-mock-upstream"]
PORTS = {"8080", "9090", "50051"}


# ----------------------------------------------------------------------------- Dockerfile parsing

class Stage:
    def __init__(self, base: str, name: str | None):
        self.base = base
        self.name = name
        self.instructions: list[tuple[str, str]] = []  # (KEYWORD, arguments)


def logical_lines(text: str) -> list[str]:
    """Instructions with continuations joined; comment lines (also inside a continuation, as
    Docker drops them) removed."""
    out: list[str] = []
    current: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current.append(stripped[:-1].strip())
            continue
        current.append(stripped)
        line = " ".join(part for part in current if part)
        current = []
        if line:
            out.append(line)
    if current:
        out.append(" ".join(current))
    return out


def substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), value)


def parse_dockerfile(text: str) -> tuple[list[Stage], dict[str, str]]:
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = substitute(words[0], global_args)
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(base, name))
        elif not stages:
            if keyword == "ARG":
                name, _, default = rest.partition("=")
                global_args[name.strip()] = default.strip().strip('"')
        else:
            stages[-1].instructions.append((keyword, rest))
    return stages, global_args


def shell_commands(run_args: str) -> list[list[str]]:
    """A RUN's shell text split into simple commands (on &&, ||, ; and |)."""
    try:
        lexer = shlex.shlex(run_args, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        tokens = run_args.split()
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token and set(token) <= set(";&|"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def apt_install_lists(stage: Stage) -> list[tuple[list[str], list[str], str]]:
    """Each `apt-get install` of the stage: (packages, options, the RUN text)."""
    found = []
    for keyword, rest in stage.instructions:
        if keyword != "RUN":
            continue
        for command in shell_commands(rest):
            words = [w for w in command if not re.fullmatch(r"\w+=\S*", w)]  # VAR=x prefixes
            if len(words) >= 2 and os.path.basename(words[0]) in ("apt-get", "apt") and "install" in words[1:]:
                after = words[words.index("install") + 1:]
                packages = [w for w in after if not w.startswith("-")]
                options = [w for w in words[1:] if w.startswith("-")]
                found.append((packages, options, rest))
    return found


def exec_form(text: str) -> list[str] | None:
    text = text.strip()
    if not text.startswith("["):
        return None
    import json
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


# ----------------------------------------------------------------------------- static checks

def load_yaml_documents(path: str):
    import yaml  # python3-yaml
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def called_programs(repo: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(program, where) for every command that docker-compose.yml and the Kubernetes manifests
    run in a Berry container, plus notes."""
    calls: list[tuple[str, str]] = []
    notes: list[str] = []
    compose = os.path.join(repo, "docker-compose.yml")
    if os.path.exists(compose):
        for doc in load_yaml_documents(compose):
            for name, service in (doc.get("services") or {}).items():
                if not isinstance(service, dict):
                    continue
                image = str(service.get("image", ""))
                if "berry" not in image and "build" not in service:
                    continue
                where = f"docker-compose.yml services.{name}"
                for key in ("entrypoint", "command"):
                    value = service.get(key)
                    if isinstance(value, str):
                        value = shlex.split(value)
                    if value and not str(value[0]).startswith("-"):
                        calls.append((str(value[0]), f"{where}.{key}"))
                        break
                test = (service.get("healthcheck") or {}).get("test")
                if isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL"):
                    calls.append((test[1] if test[0] == "CMD" else "sh", f"{where}.healthcheck"))
                elif isinstance(test, str):
                    calls.append(("sh", f"{where}.healthcheck"))
    else:
        notes.append("docker-compose.yml not found: no compose commands checked")
    k8s = os.path.join(repo, "deploy", "k8s")
    files = [p for p in glob.glob(os.path.join(k8s, "**", "*.y*ml"), recursive=True)
             if os.sep + "templates" + os.sep not in p and "values" not in os.path.basename(p)]
    if not files:
        notes.append("no Kubernetes manifests under deploy/k8s yet: none checked")

    def walk(node, where):
        if isinstance(node, dict):
            image = node.get("image")
            if isinstance(image, str) and "berry" in image:
                command = node.get("command")
                if isinstance(command, list) and command:
                    calls.append((str(command[0]), f"{where} container {node.get('name', '?')}"))
                for probe_key in ("livenessProbe", "readinessProbe", "startupProbe"):
                    probe = node.get(probe_key) or {}
                    exec_command = (probe.get("exec") or {}).get("command")
                    if isinstance(exec_command, list) and exec_command:
                        calls.append((str(exec_command[0]), f"{where} {probe_key}"))
                lifecycle = node.get("lifecycle") or {}
                for hook in ("preStop", "postStart"):
                    exec_command = ((lifecycle.get(hook) or {}).get("exec") or {}).get("command")
                    if isinstance(exec_command, list) and exec_command:
                        calls.append((str(exec_command[0]), f"{where} {hook}"))
            for value in node.values():
                walk(value, where)
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    for path in sorted(files):
        try:
            docs = load_yaml_documents(path)
        except Exception as error:  # a YAML error is the chart/kustomize tests' business
            notes.append(f"{os.path.relpath(path, repo)}: not parsed ({error.__class__.__name__})")
            continue
        for doc in docs:
            walk(doc, os.path.relpath(path, repo))
    return calls, notes


def dockerignore_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex on slash paths."""
    pattern = pattern.strip().lstrip("/").rstrip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + "(?:/.*)?$")  # a matched directory excludes what is under it


def excluded_by_dockerignore(repo: str, relative: str) -> bool:
    path = os.path.join(repo, ".dockerignore")
    if not os.path.exists(path):
        return False
    excluded = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if dockerignore_regex(line.lstrip("!")).match(relative):
                excluded = not negate
    return excluded


def check_build_context(repo: str, build: Stage) -> list[str]:
    """Every file the build stage COPYs from the context exists and is not .dockerignored."""
    errors = []
    for keyword, rest in build.instructions:
        if keyword not in ("COPY", "ADD") or "--from=" in rest:
            continue
        sources = [w for w in rest.split() if not w.startswith("--")][:-1]
        for source in sources:
            top = os.path.join(repo, source)
            if not os.path.exists(top):
                errors.append(f"build stage copies {source}, which does not exist")
                continue
            files = [top] if os.path.isfile(top) else [
                os.path.join(root, name) for root, _, names in os.walk(top) for name in names]
            for file in files:
                relative = os.path.relpath(file, repo).replace(os.sep, "/")
                if excluded_by_dockerignore(repo, relative):
                    errors.append(f".dockerignore excludes {relative}, which the build copies "
                                  f"({keyword} {source})")
                    break
    return errors


def check_dockerfile(dockerfile: str, repo: str, binaries: dict[str, str], build_dir: str,
                     check_callers: bool = True) -> list[str]:
    errors: list[str] = []
    with open(dockerfile, encoding="utf-8") as f:
        stages, _ = parse_dockerfile(f.read())
    if len(stages) < 2:
        return [f"expected a multi-stage build, found {len(stages)} stage(s)"]
    build, runtime = stages[0], stages[-1]

    # Build stage.
    if not re.fullmatch(r"(docker\.io/(library/)?)?debian:bookworm(@sha256:[0-9a-f]+)?", build.base):
        errors.append(f"build stage base is {build.base!r}, expected debian:bookworm")
    build_runs = " ".join(rest for kw, rest in build.instructions if kw == "RUN")
    copies = " ".join(rest for kw, rest in build.instructions if kw in ("COPY", "ADD"))
    if "scripts/install-deps" not in copies:
        errors.append("build stage does not COPY scripts/install-deps (the one package list)")
    else:
        copied_to = [rest.split()[-1] for kw, rest in build.instructions
                     if kw == "COPY" and "scripts/install-deps" in rest]
        if not any(os.path.basename(dest.rstrip("/")) in build_runs or dest in build_runs
                   for dest in copied_to):
            errors.append("build stage copies scripts/install-deps but never runs it")
    for needle, what in ((r"CMAKE_BUILD_TYPE=Release\b", "a Release build"),
                         (r"BERRY_BUILD_TESTS=OFF\b", "BERRY_BUILD_TESTS=OFF"),
                         (r"BERRY_BUILD_BENCH=OFF\b", "BERRY_BUILD_BENCH=OFF")):
        if not re.search(needle, build_runs):
            errors.append(f"build stage cmake lacks {what}")
    for program, path in binaries.items():
        relative = os.path.relpath(path, build_dir)
        if not re.search(r"(^|[\s/])" + re.escape(relative) + r"(\s|$)", build_runs):
            errors.append(f"build stage does not install {relative} (the CMake target "
                          f"{program}'s path in the build tree)")
        if program not in build_runs.split("--target", 1)[-1]:
            errors.append(f"build stage does not build the target {program}")
    if "/usr/local/bin" not in build_runs:
        errors.append("build stage does not install the programs to /usr/local/bin")
    if os.path.exists(os.path.join(repo, "CMakeLists.txt")):
        errors += check_build_context(repo, build)
        if not os.path.exists(os.path.join(repo, ".dockerignore")):
            errors.append("no .dockerignore: build/ and .git would be sent as build context")
        else:
            for heavy in ("build/test/CMakeCache.txt", ".git/HEAD", "node_modules/x"):
                if not excluded_by_dockerignore(repo, heavy):
                    errors.append(f".dockerignore does not exclude {heavy.split('/')[0]}/")

    # Runtime stage.
    if not re.fullmatch(r"(docker\.io/(library/)?)?debian:bookworm-slim(@sha256:[0-9a-f]+)?",
                        runtime.base):
        errors.append(f"runtime stage base is {runtime.base!r}, expected debian:bookworm-slim")
    installs = apt_install_lists(runtime)
    if not installs:
        errors.append("runtime stage has no `apt-get install`")
    for packages, options, text in installs:
        if "--no-install-recommends" not in options:
            errors.append("runtime `apt-get install` lacks --no-install-recommends")
        if "-y" not in options and "--yes" not in options and "-qy" not in options:
            errors.append("runtime `apt-get install` lacks -y")
        if "rm -rf /var/lib/apt/lists" not in text:
            errors.append("the runtime RUN with `apt-get install` does not remove /var/lib/apt/lists")
        if any(p in ("curl", "wget", "busybox", "netcat-openbsd", "bash") for p in packages):
            errors.append(f"runtime stage installs shell tools: {packages}")
    keywords = [kw for kw, _ in runtime.instructions]
    users = [rest for kw, rest in runtime.instructions if kw == "USER"]
    if not users:
        errors.append("runtime stage sets no USER (it would run as root)")
    else:
        user = users[-1]
        match = re.fullmatch(r"(\d+)(?::(\d+))?", user)
        if not match:
            errors.append(f"USER {user!r} is not numeric uid[:gid] (Kubernetes runAsNonRoot "
                          "cannot verify a name)")
        elif int(match.group(1)) == 0 or (match.group(2) is not None and int(match.group(2)) == 0):
            errors.append(f"USER {user} is root")
        elif match.group(1) != "65532":
            errors.append(f"USER {user}: the deployment contract says 65532:65532")
        last_user = max(i for i, kw in enumerate(keywords) if kw == "USER")
        if any(kw == "RUN" for kw in keywords[last_user + 1:]):
            errors.append("a RUN follows the final USER (it would need root)")
    copied: dict[str, str] = {}
    stage_names = {s.name for s in stages[:-1] if s.name} | {str(i) for i in range(len(stages) - 1)}
    for kw, rest in runtime.instructions:
        if kw != "COPY":
            continue
        words = rest.split()
        sources_from = [w.split("=", 1)[1] for w in words if w.startswith("--from=")]
        paths = [w for w in words if not w.startswith("--")]
        if not sources_from or len(paths) < 2:
            continue
        if sources_from[0] not in stage_names:
            errors.append(f"COPY --from={sources_from[0]}: no such earlier stage")
        dest = paths[-1]
        for source in paths[:-1]:
            copied[os.path.basename(source.rstrip("/"))] = dest
    for program in PROGRAMS:
        if program not in copied:
            errors.append(f"runtime stage does not COPY {program} from the build stage")
        elif copied[program].rstrip("/") != "/usr/local/bin":
            errors.append(f"{program} is copied to {copied[program]}, not /usr/local/bin/")
    exposed = set(" ".join(rest for kw, rest in runtime.instructions if kw == "EXPOSE").split())
    exposed = {p.split("/")[0] for p in exposed}
    if not PORTS <= exposed:
        errors.append(f"EXPOSE lacks {sorted(PORTS - exposed)}")
    healthchecks = [rest for kw, rest in runtime.instructions if kw == "HEALTHCHECK"]
    if not healthchecks:
        errors.append("runtime stage has no HEALTHCHECK")
    else:
        text = healthchecks[-1]
        command = exec_form(text.split("CMD", 1)[1]) if "CMD" in text else None
        if command is None:
            errors.append("HEALTHCHECK is not in exec form (CMD [\"berryctl\", \"probe\", URL])")
        elif command[:2] != ["berryctl", "probe"] or len(command) < 3:
            errors.append(f"HEALTHCHECK runs {command}, expected berryctl probe URL")
    for kw, rest in runtime.instructions:
        if kw == "ENTRYPOINT":
            errors.append(f"runtime stage has an ENTRYPOINT ({rest}); the contract wants none")
        if kw in ("RUN", "HEALTHCHECK", "CMD") and re.search(r"\b(curl|wget)\b", rest):
            errors.append(f"{kw} uses curl/wget: {rest[:80]}")
    cmds = [exec_form(rest) for kw, rest in runtime.instructions if kw == "CMD"]
    if cmds and (cmds[-1] is None or cmds[-1][0] not in copied):
        errors.append("CMD is not an exec-form command running a program of the image")

    if check_callers:
        calls, notes = called_programs(repo)
        for note in notes:
            print(f"note: {note}")
        for program, where in calls:
            if program.startswith("/"):
                directory, program = os.path.split(program)
                if program in copied and copied[program].rstrip("/") != directory:
                    errors.append(f"{where} runs {directory}/{program}; the image has it in "
                                  f"{copied[program]}")
                    continue
            if program not in copied:
                errors.append(f"{where} runs {program!r}, which the image does not hold "
                              f"(it holds {', '.join(sorted(copied))})")
        print(f"checked {len(calls)} command(s) of docker-compose.yml and deploy/k8s against "
              "the image's programs")
    return errors


# ----------------------------------------------------------------------------- library checks

def run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, check=False)


@functools.lru_cache(maxsize=None)
def needed_libraries(binary: str) -> list[str]:
    out = run(["readelf", "-d", binary])
    if out.returncode != 0:
        raise RuntimeError(f"readelf -d {binary}: {out.stderr.strip()}")
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out.stdout)


@functools.lru_cache(maxsize=None)
def ldd_paths(binary: str) -> tuple[dict[str, str], list[str]]:
    """soname -> resolved path for everything ldd loads, and sonames not found."""
    out = run(["ldd", binary])
    if out.returncode != 0:
        raise RuntimeError(f"ldd {binary}: {out.stderr.strip() or out.stdout.strip()}")
    resolved: dict[str, str] = {}
    missing: list[str] = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            name, _, target = line.partition("=>")
            target = target.strip()
            if target.startswith("not found"):
                missing.append(name.strip())
            else:
                resolved[name.strip()] = target.split(" (")[0].strip()
        elif line.startswith("/"):
            path = line.split(" (")[0].strip()
            resolved[os.path.basename(path)] = path
    return resolved, missing


def path_variants(path: str) -> list[str]:
    """The path, its resolved target, and both spellings under Debian's merged /usr."""
    seeds = [path, os.path.realpath(path)]
    variants: list[str] = []
    for seed in seeds:
        for candidate in (seed,
                          re.sub(r"^/usr/(lib|lib64|bin|sbin)/", r"/\1/", seed),
                          re.sub(r"^/(lib|lib64|bin|sbin)/", r"/usr/\1/", seed)):
            if candidate not in variants:
                variants.append(candidate)
    return variants


@functools.lru_cache(maxsize=None)
def packages_of(paths: tuple[str, ...]) -> dict[str, str]:
    """path -> Debian package, for each path some variant of which dpkg knows."""
    variants = {p: path_variants(p) for p in paths}
    everything = sorted({v for vs in variants.values() for v in vs})
    owners: dict[str, str] = {}
    out = run(["dpkg", "-S", *everything])  # exit 1 when some variant is unknown: expected
    for line in out.stdout.splitlines():
        if line.startswith("diversion "):
            continue
        packages, sep, owned = line.rpartition(": ")
        if not sep:
            continue
        owners[owned.strip()] = packages.split(",")[0].strip().split(":")[0]
    result = {}
    for path, candidates in variants.items():
        for candidate in candidates:
            if candidate in owners:
                result[path] = owners[candidate]
                break
    return result


@functools.lru_cache(maxsize=None)
def installed_dependencies() -> tuple[dict[str, list[list[str]]], dict[str, set[str]]]:
    """For every installed package: its Depends + Pre-Depends (groups of alternatives); and
    who provides each virtual package."""
    out = run(["dpkg-query", "-W", "-f", "${Package}\t${Depends}\t${Pre-Depends}\t${Provides}\n"])
    depends: dict[str, list[list[str]]] = {}
    provided_by: dict[str, set[str]] = {}
    for line in out.stdout.splitlines():
        fields = (line.split("\t") + ["", "", ""])[:4]
        package = fields[0]
        groups = []
        for field in fields[1:3]:
            for group in filter(None, (g.strip() for g in field.split(","))):
                groups.append([re.split(r"[\s(:]", alt.strip())[0] for alt in group.split("|")])
        depends[package] = groups
        for provided in filter(None, (p.strip() for p in fields[3].split(","))):
            provided_by.setdefault(re.split(r"[\s(:]", provided)[0], set()).add(package)
    return depends, provided_by


def dependency_closure(roots: set[str]) -> set[str]:
    """Installed packages reachable from roots through Depends and Pre-Depends."""
    depends, provided_by = installed_dependencies()
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        package = todo.pop()
        if package in seen:
            continue
        seen.add(package)
        for group in depends.get(package, []):
            for alternative in group:
                candidates = ({alternative} if alternative in depends else set()) | \
                    provided_by.get(alternative, set())
                todo.extend(candidates)
    return seen


def check_libraries(dockerfile: str, binaries: dict[str, str]) -> list[str]:
    errors: list[str] = []
    with open(dockerfile, encoding="utf-8") as f:
        stages, _ = parse_dockerfile(f.read())
    listed = {p for packages, _, _ in apt_install_lists(stages[-1]) for p in packages}
    if not listed:
        return ["the runtime stage installs no package"]
    print(f"runtime stage installs: {' '.join(sorted(listed))}")
    print(f"already in debian:bookworm-slim (allowed unlisted): {' '.join(sorted(BASE_PACKAGES))}")
    direct: dict[str, set[str]] = {}   # package -> programs needing one of its libraries
    indirect: dict[str, str] = {}      # library path -> program
    unresolved: list[str] = []
    all_paths: set[str] = set()
    per_binary = {}
    for program, binary in sorted(binaries.items()):
        if not os.path.exists(binary):
            errors.append(f"{program}: {binary} does not exist (build it first)")
            continue
        needed = needed_libraries(binary)
        resolved, missing = ldd_paths(binary)
        for soname in missing:
            errors.append(f"{program}: ldd cannot find {soname}")
        per_binary[program] = (needed, resolved)
        all_paths.update(resolved.values())
    owners = packages_of(tuple(sorted(all_paths)))
    for program, (needed, resolved) in per_binary.items():
        print(f"{program}: {len(needed)} NEEDED, {len(resolved)} loaded in all")
        for soname in needed:
            path = resolved.get(soname)
            if path is None:
                unresolved.append(f"{program}: NEEDED {soname} not resolved by ldd")
                continue
            package = owners.get(path)
            if package is None:
                errors.append(f"{program}: {soname} ({path}) belongs to no Debian package "
                              "(dpkg -S): the runtime image cannot install it")
                continue
            direct.setdefault(package, set()).add(program)
            if package not in listed and package not in BASE_PACKAGES:
                errors.append(f"{program} needs {soname} from package {package}, which the "
                              "runtime stage does not install")
        for soname, path in resolved.items():
            if soname not in needed:
                indirect[path] = program
    errors.extend(unresolved)
    closure = dependency_closure(listed | BASE_PACKAGES)
    for path, program in sorted(indirect.items()):
        package = owners.get(path)
        if package is None:
            errors.append(f"{program} loads {path} indirectly; it belongs to no Debian package")
        elif package not in closure:
            errors.append(f"{program} loads {path} (package {package}) indirectly, and no "
                          "installed package depends on it")
    for package in sorted(listed - set(direct) - set(EXTRA_RUNTIME_PACKAGES)):
        errors.append(f"the runtime stage installs {package}, which no program needs (only "
                      "runtime libraries belong there)")
    for package, programs in sorted(direct.items()):
        where = ("listed" if package in listed else
                 "in bookworm-slim" if package in BASE_PACKAGES else "MISSING")
        print(f"  {package:24} {where:17} needed by {', '.join(sorted(programs))}")
    return errors


# ----------------------------------------------------------------------------- main

def parse_binaries(pairs: list[str]) -> dict[str, str]:
    binaries = {}
    for pair in pairs:
        name, _, path = pair.partition("=")
        binaries[name] = path
    return binaries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["dockerfile", "libs"])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--dockerfile")
    parser.add_argument("--build-dir", required=True)
    parser.add_argument("--binary", action="append", default=[], metavar="PROGRAM=PATH")
    args = parser.parse_args()
    dockerfile = args.dockerfile or os.path.join(args.repo, "Dockerfile")
    binaries = parse_binaries(args.binary)
    if sorted(binaries) != sorted(PROGRAMS):
        print(f"error: pass --binary for each of {PROGRAMS}", file=sys.stderr)
        return 2
    if not os.path.exists(dockerfile):
        print(f"FAIL: {dockerfile} does not exist")
        return 1
    if args.mode == "dockerfile":
        try:
            import yaml  # noqa: F401
        except ImportError:
            print("SKIP: python3-yaml is not installed (scripts/install-deps installs it)")
            return SKIP
        errors = check_dockerfile(dockerfile, args.repo, binaries, args.build_dir)
        if not shutil.which("hadolint"):
            print("note: hadolint is not installed (Debian 12 does not package it): not run; "
                  "the checks above cover its rules that matter here")
        else:
            out = run(["hadolint", dockerfile])
            print(out.stdout + out.stderr)
            if out.returncode != 0:
                errors.append("hadolint reported problems (above)")
    else:
        for tool in ("readelf", "ldd", "dpkg", "dpkg-query"):
            if not shutil.which(tool):
                print(f"SKIP: {tool} is not available")
                return SKIP
        errors = check_libraries(dockerfile, binaries)
    for error in errors:
        print(f"FAIL: {error}")
    if errors:
        print(f"{len(errors)} problem(s) in {dockerfile}")
        return 1
    print(f"ok: {dockerfile} ({args.mode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
