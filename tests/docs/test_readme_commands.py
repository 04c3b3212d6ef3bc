"""The commands in README.md and docs/*.md run as written, against a real server.

Every ```sh block in those files carries a marker on the line before it:

- ``<!-- run -->``: each command is run, in file order (README.md first, then docs/ by
  name), in one temporary directory that holds a copy of ``ceremonies/``;
- ``<!-- run: one shell -->``: the whole block runs in one shell, so variables it sets
  carry from line to line;
- ``<!-- run: server -->``: the block's one command starts the server in the background
  (on a free port instead of the one written) and ``TANDEM_SERVER`` points at it;
- ``<!-- not-run: reason -->``: never run; the reason says why (Docker, a PostgreSQL host).

An unmarked ``sh`` block fails the test, so a new block cannot slip past it. The CLI is
this checkout's (``python -m tandem.cli`` on PATH as ``tandem``). Secrets come from the
environment variables the CLI documents: ``TANDEM_PASSPHRASE`` for every keystore, and
``TANDEM_TOTP`` set for approving commands (and ``totp enrol``'s confirmation) to the
member's next unused code, computed from the ``-k`` keystore as the member's authenticator
would: ``TANDEM_KEEP_TOTP_SEED=1`` makes every keystore keep its seed, as scripts do.
Values a reader copies from an earlier output are written in the docs as the reader sees
them, and filled in from what the commands printed so far: ``cer_...``, ``prop_...``,
``pc_...``, ``ks_...``, ``wd_...`` take the latest such id printed, ``tclaim_...`` the
claim token, ``GENESIS_HASH`` and ``TRANSCRIPT_HASH`` the latest hashes printed with those
names. Questions (``genesis sign``) are answered ``y`` on standard input.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from tests.helpers.servers import free_port

from tandem.core.identity import MemberSecrets
from tandem.core.totp import code_at

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "readme passphrase, for tests only"
MARKER = re.compile(r"^<!--\s*(run(?::\s*(?:server|one shell))?|not-run:\s*(?P<reason>.+?))\s*-->\s*$")
FENCE = re.compile(r"^```(\S*)\s*$")
ID_PREFIXES = ("cer", "prop", "pc", "ks", "wd", "chl")
NEEDS_TOTP = re.compile(
    r"^tandem (totp enrol|proposal approve|ceremony approve|proof contribute|withdraw approve|"
    r"withdraw contribute|keyset approve-import)\b"
)
COMMAND_TIMEOUT = 180


@dataclass
class Block:
    source: str
    line: int
    mode: str  # "run", "server", "script" or "not-run"
    text: str
    reason: str = ""


def doc_files() -> list[Path]:
    docs = sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "benchmarks.md")
    return [ROOT / "README.md", *docs]


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        lang, start = fence.group(1), i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        if lang != "sh":
            continue
        where = f"{path.relative_to(ROOT)}:{start + 1}"
        marker = MARKER.match(lines[start - 1]) if start > 0 else None
        if marker is None:
            raise AssertionError(
                f"{where}: a sh block needs <!-- run -->, <!-- run: server -->, <!-- run: one shell --> "
                "or <!-- not-run: reason --> on the line before it"
            )
        kind = marker.group(1)
        mode = {"run": "run", "run: server": "server", "run: one shell": "script"}.get(
            re.sub(r"\s+", " ", kind), "not-run"
        )
        out.append(Block(where, start + 1, mode, "\n".join(body), (marker.group("reason") or "").strip()))
    return out


def commands_of(text: str) -> list[str]:
    """Shell commands of a block: backslash continuations joined, heredocs kept whole."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", line)
        if heredoc:
            end = heredoc.group(1)
            parts = [line]
            while i < len(lines):
                parts.append(lines[i])
                i += 1
                if parts[-1].strip() == end:
                    break
            line = "\n".join(parts)
        out.append(line)
    return out


@dataclass
class Session:
    work: Path
    env: dict[str, str]
    printed: str = ""
    last_step: dict[str, int] = field(default_factory=dict)
    server: subprocess.Popen[bytes] | None = None
    ran: list[str] = field(default_factory=list)

    def fill(self, command: str) -> str:
        def latest(pattern: str, what: str) -> str:
            found = re.findall(pattern, self.printed)
            if not found:
                raise AssertionError(f"`{command}` needs {what}, and no earlier command printed one")
            return str(found[-1])

        for prefix in ID_PREFIXES:
            token = f"{prefix}_..."
            if token in command:
                command = command.replace(token, latest(rf"\b({prefix}_[0-9a-f]{{8,}})\b", f"a {token} id"))
        if "tclaim_..." in command:
            command = command.replace("tclaim_...", latest(r"\b(tclaim_[A-Za-z0-9_-]{16,})", "a claim token"))
        if "GENESIS_HASH" in command:
            command = command.replace(
                "GENESIS_HASH", latest(r"genesis[ _]hash\W+([0-9a-f]{64})", "a genesis hash")
            )
        if "TRANSCRIPT_HASH" in command:
            command = command.replace(
                "TRANSCRIPT_HASH",
                latest(r"transcript[ _]hash\W+(?:sha256:)?([0-9a-f]{64})", "a transcript hash"),
            )
        return command

    def totp_for(self, command: str) -> dict[str, str]:
        if not NEEDS_TOTP.match(command):
            return {}
        words = shlex.split(command, comments=True)
        flag = next(i for i, w in enumerate(words) if w in {"-k", "--keystore"})
        keystore = self.work / words[flag + 1]
        member = MemberSecrets.from_keystore(keystore.read_bytes(), PASSPHRASE)
        # One code per 30 s step and member; the server allows one step of clock skew.
        while True:
            now_step = int(time.time()) // 30
            # An enrolment's code is checked against a fresh seed with the whole skew window,
            # so the current step's code is used: it stays valid for the next 30 s too.
            earliest = now_step if words[1:3] == ["totp", "enrol"] else now_step - 1
            step = max(earliest, self.last_step.get(keystore.name, -1) + 1)
            if step <= now_step + 1:
                break
            print(
                f"   waiting {30 - int(time.time()) % 30} s for {keystore.stem}'s next TOTP step", flush=True
            )
            time.sleep(1)
        self.last_step[keystore.name] = step
        return {"TANDEM_TOTP": code_at(member.totp_secret, step)}

    def run(self, block: Block, command: str) -> None:
        filled = self.fill(command)
        env = {**self.env, **self.totp_for(filled)}
        proc = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", filled],
            cwd=self.work,
            env=env,
            input="y\n",
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        self.printed += proc.stdout + proc.stderr
        self.ran.append(filled)
        if proc.returncode != 0:
            raise AssertionError(
                f"{block.source}: `{command}` exited {proc.returncode}\n"
                f"ran: {filled}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        if "tandem totp enrol" in filled:
            # Enrolment confirmed the current code: it counts as used.
            self.last_step[self.keystore_name(filled)] = int(time.time()) // 30

    @staticmethod
    def keystore_name(command: str) -> str:
        words = shlex.split(command, comments=True)
        return Path(words[words.index("-k") + 1]).name

    def start_server(self, block: Block) -> None:
        [command] = commands_of(block.text)
        port = free_port()
        words = shlex.split(command, comments=True)
        assert words[:2] == ["tandem", "serve"], f"{block.source}: a server block runs `tandem serve`"
        words = [*words[: words.index("--port") + 1], str(port), *words[words.index("--port") + 2 :]]
        log = (self.work / "server.log").open("wb")
        self.server = subprocess.Popen(
            words, cwd=self.work, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            if self.server.poll() is not None:
                raise AssertionError(
                    f"{block.source}: the server exited:\n{(self.work / 'server.log').read_text()}"
                )
            try:
                if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"{block.source}: the server did not answer /v1/health")
        self.env["TANDEM_SERVER"] = url

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            self.server.wait(timeout=20)


def every_block() -> list[Block]:
    return [b for path in doc_files() for b in blocks_of(path)]


def test_every_sh_block_is_marked_and_not_run_blocks_say_why() -> None:
    blocks = every_block()
    assert any(b.mode == "run" for b in blocks)
    assert [b.source for b in blocks if b.mode == "server"], "some block must start the server"
    for b in blocks:
        if b.mode == "not-run":
            assert b.reason, f"{b.source}: a not-run block says why"


def test_commands_split_like_a_shell_reads_them() -> None:
    text = "a one # note\n\nb \\\n  two\ncat > f <<'EOF'\n{\n}\nEOF\n# only a comment\nc"
    assert commands_of(text) == ["a one # note", "b  two", "cat > f <<'EOF'\n{\n}\nEOF", "c"]


@pytest.mark.slow
def test_readme_and_docs_commands_run_against_a_real_server(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(ROOT / "ceremonies", work / "ceremonies")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tandem = bindir / "tandem"
    tandem.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m tandem.cli "$@"\n')
    tandem.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env.update(
        PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{env.get('PYTHONPATH', '')}",
        TANDEM_PASSPHRASE=PASSPHRASE,
        # Scripts keep the TOTP seed in the keystore, so codes can be computed from it.
        TANDEM_KEEP_TOTP_SEED="1",
        TANDEM_SERVER="http://127.0.0.1:9",  # nothing listens until a server block runs
        COLUMNS="200",
    )
    session = Session(work=work, env=env)
    try:
        for block in every_block():
            if block.mode == "server":
                session.start_server(block)
            elif block.mode == "run":
                for command in commands_of(block.text):
                    session.run(block, command)
            elif block.mode == "script":
                session.run(block, block.text)  # one shell: variables carry from line to line
    finally:
        session.stop()
        (tmp_path / "printed.txt").write_text(session.printed)
    assert session.server is not None
    assert any(c.startswith("tandem genesis submit") for c in session.ran)
    # The first run as the README tells it: genesis shows what is signed, the delayed
    # membership change says when (local time, with its offset) and who may veto.
    assert "Sign this genesis as bob (custodian)?" in session.printed
    assert re.search(
        r"takes effect at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d .*any custodian or any "
        r"manager can veto it with `tandem proposal veto prop_",
        session.printed,
    )
    assert "allowed once the required approvals are in" in session.printed
    assert "OK: every proof verifies" in session.printed
