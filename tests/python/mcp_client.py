#!/usr/bin/env python3
"""A real MCP client (the official Python SDK, ``mcp`` on PyPI) driving
``coral mcp`` as an assistant's host would: it starts the server over stdio
(or, with ``--http``, starts it on a loopback port and connects over
streamable HTTP), lists the tools and checks their JSON schemas with
``jsonschema``, checks every call's arguments against the tool's input
schema and every answer against its output schema, and runs one scenario:

- ``tools``: capabilities, the docs resources, and a refused call (a
  duration over the agent's --max-duration);
- ``getppid``: start_tap syscall-stats on a coral-workload making exactly N
  getppid calls, then tap_result;
- ``diagnose-cpu``: diagnose ``cpu`` on a coral-burn process;
- ``read-only``: what a read-only token can and cannot do;
- ``agent-restart``: the agent (started here, ``--agent-bin``) goes away
  and comes back under a running ``coral mcp``;
- ``colony``: ``coral --colony URL mcp``: capabilities per node, a fleet
  start_tap read back per node, a refusal by every agent, diagnose ``cpu``.

Prints one JSON object with what it saw; tests/tests/mcp.rs asserts on it.

    python3 tests/python/mcp_client.py --coral target/debug/coral \\
        --agent unix:///run/coral/agent.sock --scenario tools
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import jsonschema
from mcp import Client, MCPError, StdioServerParameters


class Checked:
    """A connected client whose calls are checked against the tools' schemas."""

    def __init__(self, client, tools):
        self.client = client
        self.tools = {t.name: t for t in tools}
        self.schema_errors = []

    async def call(self, name, arguments=None, check=True, progress=None):
        """Calls `name`; with `check`, its arguments must fit its schema;
        progress notifications are appended to the `progress` list."""
        arguments = arguments or {}
        tool = self.tools.get(name)
        if tool is not None and check:
            try:
                jsonschema.Draft202012Validator(tool.input_schema).validate(arguments)
            except jsonschema.ValidationError as e:
                self.schema_errors.append(f"{name} arguments {arguments}: {e.message}")
        try:
            callback = None
            if progress is not None:

                async def callback(done, total, message):
                    progress.append({"progress": done, "total": total, "message": message})

            result = await self.client.call_tool(name, arguments, progress_callback=callback)
        except MCPError as e:
            return {"is_error": True, "protocol_error": True, "text": e.message}
        text = "".join(c.text for c in result.content if getattr(c, "text", None))
        answer = {"is_error": bool(result.is_error), "text": text}
        if not result.is_error:
            answer["structured"] = result.structured_content
            if tool is not None and tool.output_schema is not None:
                try:
                    jsonschema.Draft202012Validator(tool.output_schema).validate(
                        result.structured_content
                    )
                except jsonschema.ValidationError as e:
                    self.schema_errors.append(f"{name} answer: {e.message}")
            # The text is the same JSON, summary first.
            answer["text_keys"] = list(json.loads(text).keys())
        return answer


def check_schemas(tools):
    """Every tool: a description, valid 2020-12 input and output schemas."""
    out = {}
    for t in tools:
        errors = []
        for which, schema in (("input", t.input_schema), ("output", t.output_schema)):
            if schema is None:
                errors.append(f"no {which} schema")
                continue
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as e:
                errors.append(f"{which} schema: {e.message}")
        out[t.name] = {
            "description_chars": len(t.description or ""),
            "input_type": (t.input_schema or {}).get("type"),
            "input_properties": sorted((t.input_schema or {}).get("properties", {})),
            "read_only_hint": getattr(t.annotations, "read_only_hint", None)
            if t.annotations
            else None,
            "schema_errors": errors,
        }
    return out


class Child:
    """A test workload that prints ``ready PID`` and then obeys stdin."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("ready "):
            raise RuntimeError(f"{argv[0]} said {line!r}")
        self.pid = int(line.split()[1])

    def say(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read(self):
        return self.proc.stdout.readline().strip()

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def scenario_tools(c, args, report):
    report["capabilities"] = await c.call("capabilities")
    resources = await c.client.list_resources()
    report["resources"] = [r.uri for r in resources.resources]
    doc = await c.client.read_resource("coral://docs/collectors/syscall-stats")
    report["syscall_doc_start"] = doc.contents[0].text[:40]
    # Over the agent's --max-duration: the agent refuses, the tool says why.
    report["over_max"] = await c.call(
        "start_tap", {"kind": "syscall-stats", "duration": "1h", "target": {"pids": [1]}}
    )
    report["bad_duration"] = await c.call(
        "start_tap", {"kind": "syscall-stats", "duration": "soon"}
    )
    report["unknown_tap"] = await c.call(
        "tap_result", {"id": "00000000-0000-0000-0000-000000000000"}
    )
    report["list"] = await c.call("list_taps")
    # Arguments that do not fit the schema (as a careless model might send):
    # the error quotes what was sent, but only so much of it.
    huge = "x" * 100_000
    report["unknown_field"] = await c.call(
        "start_tap", {"kind": "syscall-stats", huge: 1}, check=False
    )
    report["wrong_type"] = await c.call(
        "start_tap", {"kind": "syscall-stats", "target": {"pids": [huge]}}, check=False
    )
    report["unknown_kind"] = await c.call("start_tap", {"kind": huge}, check=False)


async def scenario_getppid(c, args, report):
    wl = Child([args.workload, "--getppid", str(args.n)])
    try:
        started = await c.call(
            "start_tap",
            {"kind": "syscall-stats", "duration": "20s", "target": {"pids": [wl.pid]}},
        )
        report["start"] = started
        if started["is_error"]:
            return
        wl.say("go")
        report["workload"] = wl.read()
        tap_id = started["structured"]["tap"]["id"]
        report["list"] = await c.call("list_taps")
        report["stop"] = await c.call("stop_tap", {"id": tap_id})
        report["result"] = await c.call(
            "tap_result", {"id": tap_id, "include_record": True, "top": 3}
        )
        report["small_record"] = await c.call(
            "tap_result", {"id": tap_id, "include_record": True, "max_bytes": 10}
        )
    finally:
        wl.close()


async def scenario_diagnose_cpu(c, args, report):
    burner = Child([args.burn, "--seconds", "30"])
    try:
        report["progress"] = []
        report["diagnose"] = await c.call(
            "diagnose",
            {"symptom": "cpu", "target": {"pids": [burner.pid]}, "duration": "3s"},
            progress=report["progress"],
        )
        report["no_target"] = await c.call("diagnose", {"symptom": "cpu", "target": {}})
    finally:
        burner.proc.kill()
        burner.close()


async def scenario_read_only(c, args, report):
    report["capabilities"] = await c.call("capabilities")
    report["list"] = await c.call("list_taps")
    report["start"] = await c.call(
        "start_tap", {"kind": "syscall-stats", "duration": "5s", "target": {"pids": [1]}}
    )
    report["diagnose"] = await c.call(
        "diagnose", {"symptom": "cpu", "target": {"pids": [1]}, "duration": "2s"}
    )


async def scenario_colony(c, args, report):
    """Against a colony (``--colony``): every node's capabilities, a fleet
    tap on a workload of exactly N getppid calls read back per node, a
    refusal by every agent, and diagnose ``cpu`` on every node."""
    report["capabilities"] = await c.call("capabilities")
    report["over_max"] = await c.call(
        "start_tap", {"kind": "syscall-stats", "duration": "1h", "target": {"pids": [1]}}
    )
    report["unknown_node"] = await c.call(
        "start_tap", {"kind": "syscall-stats", "duration": "5s", "nodes": ["nowhere"]}
    )
    wl = Child([args.workload, "--getppid", str(args.n)])
    try:
        started = await c.call(
            "start_tap",
            {"kind": "syscall-stats", "duration": "20s", "target": {"pids": [wl.pid]}},
        )
        report["start"] = started
        if started["is_error"]:
            return
        wl.say("go")
        report["workload"] = wl.read()
        tap_id = started["structured"]["tap"]["id"]
        report["list"] = await c.call("list_taps")
        report["stop"] = await c.call("stop_tap", {"id": tap_id})
        report["result"] = await c.call("tap_result", {"id": tap_id, "top": 3})
    finally:
        wl.close()
    burner = Child([args.burn, "--seconds", "30"])
    try:
        report["diagnose"] = await c.call(
            "diagnose",
            {"symptom": "cpu", "target": {"pids": [burner.pid]}, "duration": "3s"},
        )
    finally:
        burner.proc.kill()
        burner.close()


class OwnAgent:
    """A coral-agent this script starts and stops (``agent-restart``)."""

    def __init__(self, binary, addr):
        self.binary = binary
        self.socket = addr.removeprefix("unix://")
        self.proc = None

    def start(self):
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        self.proc = subprocess.Popen(
            [self.binary, "--listen", "unix://" + self.socket],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("coral-agent did not come up")
            time.sleep(0.05)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


async def scenario_agent_restart(c, args, report):
    report["before"] = await c.call("list_taps")
    args.own_agent.stop()
    report["away"] = await c.call("list_taps")
    args.own_agent.start()
    # The socket exists before the agent answers: retry for a while.
    for _ in range(100):
        report["back"] = await c.call("list_taps")
        if not report["back"]["is_error"]:
            break
        await asyncio.sleep(0.1)


SCENARIOS = {
    "tools": scenario_tools,
    "getppid": scenario_getppid,
    "diagnose-cpu": scenario_diagnose_cpu,
    "read-only": scenario_read_only,
    "agent-restart": scenario_agent_restart,
    "colony": scenario_colony,
}


def server_command(args):
    server = ["--colony", args.colony] if args.colony else ["--agent", args.agent]
    argv = [args.coral] + server + ["mcp"] + args.mcp_arg
    env = dict(os.environ)
    if args.token:
        # As an assistant's configuration would: the token in the environment.
        env["CORAL_TOKEN"] = args.token
    return argv, env


async def run(args):
    argv, env = server_command(args)
    report = {}
    http_server = None
    args.own_agent = None
    if args.scenario == "agent-restart":
        args.own_agent = OwnAgent(args.agent_bin, args.agent)
        args.own_agent.start()
        await asyncio.sleep(0.5)
    if args.http:
        http_server = subprocess.Popen(
            argv + ["--http", "127.0.0.1:0"],
            env=env,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = http_server.stderr.readline()
        # "coral mcp: serving MCP over streamable HTTP at http://127.0.0.1:PORT/mcp for ..."
        url = next(w for w in line.split() if w.startswith("http://"))
        # Drained as it comes (audit lines), as a host's log would.
        http_log = []
        drain = threading.Thread(
            target=lambda: http_log.extend(http_server.stderr), daemon=True
        )
        drain.start()
        report["http_url"] = url
        target = url
    else:
        target = StdioServerParameters(command=argv[0], args=argv[1:], env=env)
    try:
        async with Client(target) as client:
            listed = await client.list_tools()
            report["protocol_version"] = client.protocol_version
            report["tools"] = check_schemas(listed.tools)
            c = Checked(client, listed.tools)
            await SCENARIOS[args.scenario](c, args, report)
            report["call_schema_errors"] = c.schema_errors
    finally:
        if args.own_agent is not None:
            args.own_agent.stop()
        if http_server is not None:
            http_server.terminate()
            http_server.wait(timeout=10)
            drain.join(timeout=10)
            report["http_log"] = "".join(http_log)
    print(json.dumps(report))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--coral", required=True)
    p.add_argument("--agent")
    p.add_argument("--colony")
    p.add_argument("--token")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    p.add_argument("--workload")
    p.add_argument("--burn")
    p.add_argument("--agent-bin")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--http", action="store_true")
    p.add_argument("--mcp-arg", action="append", default=[])
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
